// petrel-tls-bench: the cost of TLS, ws:// next to wss:// on the same machine and build. One
// process: a server with one loop thread and Petrel's client loop (run it under
// `taskset -c 0,1`). Scenarios: handshakes per second (connect, upgrade, close; 32 at a time),
// and echo throughput over 10 connections (16 KiB binary, window 16; 20-byte text, window 64).
//
//   swift run -c release petrel-tls-bench [--certs DIR] [--seconds S]
import Foundation
import PetrelCore
import PetrelRuntime
import Synchronization

struct Options {
    var certs = FileManager.default.currentDirectoryPath + "/../.build/test-certs"
    var seconds = 3.0
}
let options: Options = {
    var o = Options()
    var args = CommandLine.arguments.dropFirst()
    while let flag = args.popFirst(), let value = args.popFirst() {
        switch flag {
        case "--certs": o.certs = value
        case "--seconds": o.seconds = Double(value)!
        default: fatalError("usage: petrel-tls-bench [--certs DIR] [--seconds S]")
        }
    }
    return o
}()
nonisolated(unsafe) let certs = options.certs
nonisolated(unsafe) let seconds = options.seconds

func startServer(tls: Bool) throws -> Server {
    var c = ServerConfiguration(host: "127.0.0.1", port: 0)
    c.threads = 1
    c.compression = nil
    c.options.maxBackpressure = 64 << 20
    if tls { c.tls = TLSServerConfiguration(certificateChainFile: certs + "/server.pem", privateKeyFile: certs + "/server.key") }
    let h = Handlers()
    h.onMessage = { conn, kind, payload in conn.send(kind, payload) }
    let s = Server(configuration: c, handlers: h)
    try s.start()
    return s
}

func clientConfiguration() -> ClientConfiguration {
    var c = ClientConfiguration()
    c.compression = nil
    c.tls.caFile = certs + "/ca.pem"
    c.options.maxBackpressure = 64 << 20
    return c
}

/// Connections opened, upgraded and closed per second, `concurrency` at a time.
func handshakes(url: String) throws -> Double {
    let done = Atomic<Int>(0)
    let stop = Atomic<Bool>(false)
    let failures = Atomic<Int>(0)
    let config = clientConfiguration()
    @Sendable func one() {
        let h = Handlers()
        h.onOpen = { c in c.close() }
        h.onClose = { _, _, _ in
            done.add(1, ordering: .relaxed)
            if !stop.load(ordering: .relaxed) { one() }
        }
        h.onConnectFailed = { _, _ in failures.add(1, ordering: .relaxed) }
        _ = try? ClientConnector.connect(to: url, configuration: config, handlers: h)
    }
    for _ in 0..<32 { one() }
    Thread.sleep(forTimeInterval: 0.5)
    let start = (Date(), done.load(ordering: .relaxed))
    Thread.sleep(forTimeInterval: seconds)
    let n = done.load(ordering: .relaxed) - start.1
    let rate = Double(n) / Date().timeIntervalSince(start.0)
    stop.store(true, ordering: .relaxed)
    Thread.sleep(forTimeInterval: 0.5)
    precondition(failures.load(ordering: .relaxed) == 0, "handshake failures")
    return rate
}

/// Echoed messages per second over `connections`, each keeping `window` in flight.
func echo(url: String, size: Int, window: Int, connections: Int = 10) throws -> Double {
    let echoed = Atomic<Int>(0)
    let stop = Atomic<Bool>(false)
    let payload = [UInt8](repeating: 0x61, count: size)
    let kind: MessageKind = size <= 64 ? .text : .binary
    var conns: [Connection] = []
    let config = clientConfiguration()
    for _ in 0..<connections {
        let h = Handlers()
        h.onOpen = { c in for _ in 0..<window { _ = payload.withUnsafeBytes { c.send(kind, $0) } } }
        h.onMessage = { c, _, _ in
            echoed.add(1, ordering: .relaxed)
            if !stop.load(ordering: .relaxed) { _ = payload.withUnsafeBytes { c.send(kind, $0) } }
        }
        conns.append(try ClientConnector.connect(to: url, configuration: config, handlers: h))
    }
    Thread.sleep(forTimeInterval: 0.5)
    let start = (Date(), echoed.load(ordering: .relaxed))
    Thread.sleep(forTimeInterval: seconds)
    let rate = Double(echoed.load(ordering: .relaxed) - start.1) / Date().timeIntervalSince(start.0)
    stop.store(true, ordering: .relaxed)
    for c in conns { c.close() }
    Thread.sleep(forTimeInterval: 0.3)
    return rate
}

let plain = try startServer(tls: false)
let secure = try startServer(tls: true)
let ws = "ws://127.0.0.1:\(plain.port)/", wss = "wss://localhost:\(secure.port)/"
func row(_ name: String, _ unit: String, _ scale: Double, _ f: (String) throws -> Double) rethrows -> String {
    let a = try f(ws) * scale, b = try f(wss) * scale
    return "| \(name) | \(String(format: "%.0f", a)) \(unit) | \(String(format: "%.0f", b)) \(unit) | \(String(format: "%.2f", b / a)) |"
}
print("| scenario | ws:// | wss:// | wss / ws |")
print("| --- | --- | --- | --- |")
print(try row("handshakes (connect, upgrade, close), 32 at a time", "/s", 1, handshakes))
print(try row("echo 16 KiB binary, 10 connections, window 16", "MB/s", 16384 / 1e6) { try echo(url: $0, size: 16384, window: 16) })
print(try row("echo 20 B text, 10 connections, window 64", "msg/s", 1) { try echo(url: $0, size: 20, window: 64) })
plain.stop(grace: 100)
secure.stop(grace: 100)
