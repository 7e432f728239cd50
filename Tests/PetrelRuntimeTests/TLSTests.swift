import Foundation
import Glibc
import PetrelCore
@testable import PetrelRuntime
import Synchronization
import Testing

/// Test certificates made once per run by Tests/TLS/make-certs.sh (the openssl command).
enum TestCerts {
    static let dir: String = {
        let dir = NSTemporaryDirectory() + "petrel-certs-\(getpid())"
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../TLS/make-certs.sh").standardized.path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = [script, dir]
        try! p.run()
        p.waitUntilExit()
        precondition(p.terminationStatus == 0, "make-certs.sh failed")
        return dir
    }()

    static func path(_ name: String) -> String { dir + "/" + name }

    static func server(_ name: String = "server", clientCA: String? = nil) -> TLSServerConfiguration {
        TLSServerConfiguration(certificateChainFile: path("\(name).pem"), privateKeyFile: path("\(name).key"), clientCAFile: clientCA.map(path))
    }

    static func client(ca: String? = "ca.pem", serverName: String? = nil) -> ClientConfiguration {
        var c = ClientConfiguration()
        c.tls.caFile = ca.map(path)
        c.tls.serverName = serverName
        return c
    }
}

extension RuntimeTests {
    @Suite("TLS: wss:// servers and clients, certificate checks, reload")
    struct TLSTests {
        func tlsServer(_ tls: TLSServerConfiguration = TestCerts.server(), _ configure: (inout ServerConfiguration) -> Void = { _ in }) throws -> Server {
            try startEchoServer { c, _ in
                c.tls = tls
                configure(&c)
            }
        }

        /// The reason a connect failed, or nil when it opened.
        func failure(_ url: String, _ configuration: ClientConfiguration) -> String? {
            do {
                let c = try TestClient.connect(url, configuration: configuration)
                c.connection.close()
                return nil
            } catch let e as RuntimeError {
                return "\(e.kind): \(e.message)"
            } catch {
                return "\(error)"
            }
        }

        @Test("echo over wss:// by name and by address, with messages of every size")
        func echo() throws {
            let server = try tlsServer()
            defer { server.stop(grace: 100) }
            for host in ["localhost", "127.0.0.1"] {
                let c = try TestClient.connect("wss://\(host):\(server.port)/", configuration: TestCerts.client())
                for size in [0, 1, 125, 16_384, 100_000, 1 << 20] {
                    let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7) }
                    c.send(payload)
                    #expect(c.receive() == .binary(payload), "size \(size) via \(host)")
                }
                c.connection.close(code: .normalClosure, reason: "done")
                #expect(c.waitClosed() == .closed(1000, "done"))
            }
        }

        @Test("clear errors: untrusted, wrong name, expired, and plain HTTP to a TLS port")
        func errors() throws {
            let server = try tlsServer()
            defer { server.stop(grace: 100) }
            let url = "wss://127.0.0.1:\(server.port)/"
            let untrusted = failure(url, TestCerts.client(ca: "ca2.pem"))
            #expect(untrusted?.hasPrefix("tls: TLS: certificate verify failed:") == true, "\(untrusted ?? "opened")")
            let misnamed = failure(url, TestCerts.client(serverName: "wrong.example"))
            #expect(misnamed?.contains("hostname mismatch") == true, "\(misnamed ?? "opened")")
            var insecure = TestCerts.client(ca: "ca2.pem", serverName: "wrong.example")
            insecure.tls.insecureSkipVerification = true
            #expect(failure(url, insecure) == nil)
            let raw = try RawSocket(port: server.port)
            raw.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            let r = raw.read()
            #expect(String(decoding: r.bytes, as: UTF8.self).hasPrefix("HTTP/1.1 400") && String(decoding: r.bytes, as: UTF8.self).contains("this port speaks TLS"))
            // Garbage that looks like a handshake record fails the TLS handshake, not the server.
            let junk = try RawSocket(port: server.port)
            junk.write([0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
            #expect(junk.read().eof)
            #expect(failure(url, TestCerts.client()) == nil)

            let expired = try tlsServer(TestCerts.server("expired"))
            defer { expired.stop(grace: 100) }
            let old = failure("wss://127.0.0.1:\(expired.port)/", TestCerts.client())
            #expect(old?.contains("certificate has expired") == true, "\(old ?? "opened")")
            // A plain ws:// client speaking to the TLS port gets the 400, as a handshake error.
            let plain = failure("ws://127.0.0.1:\(server.port)/", ClientConfiguration())
            #expect(plain?.contains("400") == true, "\(plain ?? "opened")")
        }

        @Test("plaintext on a TLS port is refused whatever follows it: no upgrade without TLS")
        func plaintextNeverPasses() throws {
            let opened = Lock(0)
            let server = try tlsServer { _ in }
            server.handlers.onOpen = { _ in opened.withLock { $0 += 1 } }
            defer { server.stop(grace: 100) }
            let raw = try RawSocket(port: server.port)
            // Exactly one read buffer of junk, then a valid upgrade request in the same burst: the
            // server's second read in that loop iteration must not parse it as plain HTTP.
            raw.write([UInt8](repeating: 0x41, count: EventLoop.readBufferSize) + Array(
                "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".utf8))
            let r = raw.read(timeout: 2)
            #expect(!String(decoding: r.bytes, as: UTF8.self).contains("101 Switching"))
            #expect(opened.withLock { $0 } == 0)
        }

        @Test("bad TLS files fail start with the reason")
        func badFiles() throws {
            var c = ServerConfiguration(host: "127.0.0.1", port: 0)
            c.tls = TLSServerConfiguration(certificateChainFile: "/nonexistent.pem", privateKeyFile: TestCerts.path("server.key"))
            #expect(throws: RuntimeError.self) { try Server(configuration: c, handlers: Handlers()).start() }
            c.tls = TLSServerConfiguration(certificateChainFile: TestCerts.path("server.pem"), privateKeyFile: TestCerts.path("server2.key"))
            do {
                try Server(configuration: c, handlers: Handlers()).start()
                Issue.record("a key that does not match its certificate was accepted")
            } catch {
                #expect(error.kind == .tls && error.message.contains("does not match"), "\(error)")
            }
        }

        @Test("reloading the certificate applies to new connections; open ones go on")
        func reload() throws {
            let server = try tlsServer()
            defer { server.stop(grace: 100) }
            let url = "wss://localhost:\(server.port)/"
            let before = try TestClient.connect(url, configuration: TestCerts.client())
            #expect(failure(url, TestCerts.client(ca: "ca2.pem")) != nil)
            try server.reloadTLS(TestCerts.server("server2"))
            #expect(failure(url, TestCerts.client(ca: "ca2.pem")) == nil)
            #expect(failure(url, TestCerts.client(ca: "ca.pem")) != nil)
            before.send("still here")
            #expect(before.receive() == .text("still here"))
            // A failed reload keeps the current files.
            #expect(throws: RuntimeError.self) { try server.reloadTLS(TestCerts.server("missing")) }
            #expect(failure(url, TestCerts.client(ca: "ca2.pem")) == nil)
        }

        @Test("client certificates: required and checked when the server names a CA")
        func clientCertificates() throws {
            let server = try tlsServer(TestCerts.server(clientCA: "ca.pem"))
            defer { server.stop(grace: 100) }
            let url = "wss://localhost:\(server.port)/"
            #expect(failure(url, TestCerts.client()) != nil)
            var withCert = TestCerts.client()
            withCert.tls.certificateChainFile = TestCerts.path("client.pem")
            withCert.tls.privateKeyFile = TestCerts.path("client.key")
            #expect(failure(url, withCert) == nil)
        }

        @Test("SNI picks the certificate for the name the client sends, wildcards included")
        func sni() throws {
            var tls = TestCerts.server()
            tls.certificatesByName = [
                "other.test": TLSCertificateFiles(certificateChainFile: TestCerts.path("sni.pem"), privateKeyFile: TestCerts.path("sni.key")),
                "*.wild.test": TLSCertificateFiles(certificateChainFile: TestCerts.path("sni.pem"), privateKeyFile: TestCerts.path("sni.key")),
            ]
            let server = try tlsServer(tls)
            defer { server.stop(grace: 100) }
            let url = "wss://127.0.0.1:\(server.port)/"
            #expect(failure(url, TestCerts.client(ca: "ca2.pem", serverName: "other.test")) == nil)
            #expect(failure(url, TestCerts.client(ca: "ca2.pem", serverName: "a.wild.test")) == nil)
            #expect(failure(url, TestCerts.client(ca: "ca.pem", serverName: "localhost")) == nil)
            // Unknown names get the default certificate, which is not for them.
            #expect(failure(url, TestCerts.client(ca: "ca.pem", serverName: "a.b.wild.test"))?.contains("hostname mismatch") == true)
            #expect(failure(url, TestCerts.client(ca: "ca2.pem", serverName: "localhost")) != nil)
        }

        @Test("the TLS handshake counts against the handshake timeout")
        func handshakeTimeout() throws {
            let server = try tlsServer(TestCerts.server()) { $0.options.handshakeTimeout = 300 }
            defer { server.stop(grace: 100) }
            let raw = try RawSocket(port: server.port)
            raw.write([0x16, 0x03, 0x01])  // the start of a record, then nothing
            let start = Date()
            #expect(raw.read(timeout: 5).eof)
            #expect(Date().timeIntervalSince(start) < 2)
        }
    }
}
