// petrel-soak: churn against a server while it publishes. Worker threads run CYCLES connect /
// handshake / close cycles over loopback, mixing clean closes, abrupt resets (RST), half-open
// sockets (FIN sent, never read) and connections that die mid-handshake, while a publisher
// sends a numbered message every millisecond to healthy subscribers that check every number
// arrives once, in order. Afterwards the process's fd count, thread count and RSS must be back
// near their starting values. Prints one JSON line; exits 1 on any failure.
//
//   swift run -c release petrel-soak [--cycles 100000] [--workers 4]
import Foundation
import Glibc
import PetrelCore
import PetrelRuntime
import Synchronization

struct Options {
    var cycles = 100_000
    var workers = 4
}
let options: Options = {
    var o = Options()
    var args = CommandLine.arguments.dropFirst()
    while let flag = args.popFirst(), let value = args.popFirst() {
        switch flag {
        case "--cycles": o.cycles = Int(value)!
        case "--workers": o.workers = Int(value)!
        default: fatalError("usage: petrel-soak [--cycles N] [--workers N]")
        }
    }
    return o
}()

func threadCount() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? -1 }
func rssKiB() -> Int {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
    return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
}

var config = ServerConfiguration(host: "127.0.0.1", port: 0)
config.threads = 2
config.options.handshakeTimeout = 2_000
config.options.closeTimeout = 1_000
let handlers = Handlers()
handlers.onOpen = { c in c.subscribe("numbers") }
let server = Server(configuration: config, handlers: handlers)
try server.start()
let port = server.port

// Ten healthy subscribers, connected before the baseline is read (the client loop starts then).
let lost = Atomic<Int>(0)
let received = Atomic<Int>(0)

func healthySubscriber() throws -> Connection {
    let last = Lock<Int>(0)
    let h = Handlers()
    h.onMessage = { _, _, payload in
        let n = Int(String(decoding: payload, as: UTF8.self)) ?? -1
        last.withLock { previous in
            if previous != 0 && n != previous + 1 { lost.add(1, ordering: .relaxed) }
            previous = n
        }
        received.add(1, ordering: .relaxed)
    }
    h.onClose = { _, code, _ in if code != .normalClosure && code != .goingAway { lost.add(1_000_000, ordering: .relaxed) } }
    return try ClientConnector.connect(to: "ws://127.0.0.1:\(port)/", handlers: h)
}

var healthy: [Connection] = []
for _ in 0..<10 { healthy.append(try healthySubscriber()) }
while server.connectionCount < 10 { usleep(1_000) }
Thread.sleep(forTimeInterval: 0.3)
let baseline = (fds: openFileDescriptorCount(), threads: threadCount(), rss: rssKiB())

let stop = Atomic<Bool>(false)
let published = Atomic<Int>(0)
let publisher = Thread {
    var n = 0
    while !stop.load(ordering: .relaxed) {
        n += 1
        _ = try? server.publish("numbers", text: String(n))
        published.store(n, ordering: .relaxed)
        usleep(1_000)
    }
}
publisher.start()

let request = Array(("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").utf8)
let closeFrame: [UInt8] = [0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8]
let kinds = Lock<[String: Int]>([:])
let failures = Atomic<Int>(0)

/// One cycle of kind `k`; returns false when the server did not behave.
func cycle(_ k: Int) -> Bool {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = port.bigEndian
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var tv = timeval(tv_sec: 3, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    guard rc == 0 else { return false }
    if k == 3 {  // dies mid-handshake
        _ = request.withUnsafeBytes { send(fd, $0.baseAddress, 20, Int32(MSG_NOSIGNAL)) }
        return true
    }
    _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    var buf = [UInt8](repeating: 0, count: 4096)
    var got: [UInt8] = []
    while !got.starts(with: Array("HTTP/1.1 101".utf8)) || got.firstRange(of: [13, 10, 13, 10]) == nil {
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { return false }
        got += buf[0..<n]
        if got.count >= 12 && !got.starts(with: Array("HTTP/1.1 101".utf8)) { return false }
    }
    switch k {
    case 0:  // clean: close frame, wait for the echo and the FIN
        _ = closeFrame.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return true }
            if n < 0 { return false }
        }
    case 1:  // abrupt: RST
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        return true
    default:  // half-open: FIN sent, then the socket is closed without reading
        shutdown(fd, Int32(SHUT_WR))
        return true
    }
}

let start = Date()
let perWorker = options.cycles / options.workers
let workers = (0..<options.workers).map { w in
    Thread {
        var counts = [0, 0, 0, 0]
        for i in 0..<perWorker {
            let k = (i + w) % 4
            if cycle(k) { counts[k] += 1 } else { failures.add(1, ordering: .relaxed) }
        }
        kinds.withLock { d in
            for (k, name) in ["clean", "reset", "halfOpen", "midHandshake"].enumerated() { d[name, default: 0] += counts[k] }
        }
    }
}
workers.forEach { $0.start() }
while kinds.withLock({ $0.values.reduce(0, +) }) + failures.load(ordering: .relaxed) < perWorker * options.workers {
    usleep(10_000)
}
let elapsed = Date().timeIntervalSince(start)
stop.store(true, ordering: .relaxed)
Thread.sleep(forTimeInterval: 0.2)
// Everything the churn opened is gone once the half-open and mid-handshake ones time out.
let settleDeadline = Date().addingTimeInterval(10)
while server.connectionCount > 10 && Date() < settleDeadline { usleep(10_000) }
Thread.sleep(forTimeInterval: 0.3)
let after = (fds: openFileDescriptorCount(), threads: threadCount(), rss: rssKiB())
let expected = published.load(ordering: .relaxed) * 10
let ok = failures.load(ordering: .relaxed) == 0 && lost.load(ordering: .relaxed) == 0 && received.load(ordering: .relaxed) == expected
    && server.connectionCount == 10 && after.fds == baseline.fds && after.threads == baseline.threads
    && after.rss - baseline.rss < 32 * 1024
let k = kinds.withLock { $0 }
print(
    "{\"cycles\":\(perWorker * options.workers),\"seconds\":\(String(format: "%.1f", elapsed)),\"cyclesPerSecond\":\(Int(Double(perWorker * options.workers) / elapsed)),"
        + "\"kinds\":{\"clean\":\(k["clean"] ?? 0),\"reset\":\(k["reset"] ?? 0),\"halfOpen\":\(k["halfOpen"] ?? 0),\"midHandshake\":\(k["midHandshake"] ?? 0)},"
        + "\"failures\":\(failures.load(ordering: .relaxed)),\"published\":\(published.load(ordering: .relaxed)),\"delivered\":\(received.load(ordering: .relaxed)),"
        + "\"expectedDeliveries\":\(expected),\"orderErrors\":\(lost.load(ordering: .relaxed)),"
        + "\"fds\":[\(baseline.fds),\(after.fds)],\"threads\":[\(baseline.threads),\(after.threads)],\"rssKiB\":[\(baseline.rss),\(after.rss)],\"ok\":\(ok)}")
for c in healthy { c.close() }
server.stop(grace: 500)
exit(ok ? 0 : 1)
