import Foundation
import PetrelCore
@testable import PetrelRuntime
import Synchronization
import Testing

/// The Python with the pinned `websockets` package (the test command sets it up).
private let python = ProcessInfo.processInfo.environment["PETREL_PYTHON"]
private let interopDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Interop")

extension RuntimeTests {
    @Suite("Interop with the websockets library", .enabled(if: python != nil, "PETREL_PYTHON names a Python with websockets"))
    struct InteropTests {
        @Test("websockets client -> Petrel server: 0 B to 16 MiB, fragments, deflate on/off, close codes both ways")
        func websocketsClient() throws {
            let closes = Lock<[String]>([])
            let server = try startEchoServer { c, h in
                c.options.session.maxMessageSize = 32 << 20
                c.options.session.maxFrameSize = 32 << 20
                c.options.maxBackpressure = 64 << 20
                h.onMessage = { conn, kind, payload in
                    let text = kind == .text ? String(decoding: payload, as: UTF8.self) : ""
                    if text.hasPrefix("close:") {
                        return conn.close(code: CloseCode(UInt16(text.dropFirst(6))!), reason: "requested")
                    }
                    conn.send(kind, payload)
                }
                h.onClose = { _, code, reason in closes.withLock { $0.append("\(code.rawValue) \(reason)") } }
            }
            defer { server.stop(grace: 100) }
            let p = Process()
            p.executableURL = URL(fileURLWithPath: python!)
            p.arguments = [interopDir.appendingPathComponent("websockets_client.py").path, "ws://127.0.0.1:\(server.port)"]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = out
            try p.run()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "\(text)")
            #expect(text.contains("ALL OK"))
            #expect(waitUntil { closes.withLock { $0.filter { $0 == "4001 client says bye" }.count } == 2 })
        }

        @Test("Petrel client -> websockets server: 0 B to 16 MiB, deflate on/off, close codes both ways")
        func websocketsServer() throws {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: python!)
            p.arguments = [interopDir.appendingPathComponent("websockets_server.py").path]
            let out = Pipe()
            let input = Pipe()
            p.standardOutput = out
            p.standardInput = input
            try p.run()
            defer {
                // The server exits when its stdin closes; terminate is the second line of defence.
                try? input.fileHandleForWriting.close()
                p.terminate()
                p.waitUntilExit()
            }
            let fd = out.fileHandleForReading.fileDescriptor
            var buffered = ""
            /// The next line the server prints, or nil after 20 s.
            func line() -> String? {
                while !buffered.contains("\n") {
                    var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                    guard poll(&pfd, 1, 20_000) > 0 else { return nil }
                    var chunk = [UInt8](repeating: 0, count: 4096)
                    let n = read(fd, &chunk, chunk.count)
                    if n <= 0 { return nil }
                    buffered += String(decoding: chunk[0..<n], as: UTF8.self)
                }
                let i = buffered.firstIndex(of: "\n")!
                defer { buffered = String(buffered[buffered.index(after: i)...]) }
                return String(buffered[..<i])
            }
            let ports = try #require(line()).split(separator: " ").dropFirst().map { UInt16($0)! }
            for (port, compression) in zip(ports, [true, false]) {
                var config = ClientConfiguration()
                config.compression = compression ? DeflateOptions() : nil
                config.options.session.maxMessageSize = 32 << 20
                config.options.session.maxFrameSize = 32 << 20
                config.options.maxBackpressure = 64 << 20
                let client = try TestClient.connect("ws://127.0.0.1:\(port)/", configuration: config)
                #expect(client.connection.isCompressing == compression)
                for size in [0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20] {
                    let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 13) }
                    client.send(bytes)
                    #expect(client.receive(timeout: 20) == .binary(bytes), "size \(size)")
                    let text = String(repeating: "é", count: size / 2)
                    client.send(text)
                    #expect(client.receive(timeout: 20) == .text(text), "size \(size)")
                }
                client.connection.close(code: CloseCode(4004), reason: "petrel says bye")
                #expect(client.waitClosed() == .closed(4004, "petrel says bye"))
                #expect(line() == "CLOSED 4004 petrel says bye")
                let second = try TestClient.connect("ws://127.0.0.1:\(port)/", configuration: config)
                second.send("close:4003")
                #expect(second.waitClosed() == .closed(4003, "requested"))
                _ = line()
            }
        }
    }
}
