// Load for the stock server: N WebSocket clients (Petrel's client loop) and M SSE clients (raw
// sockets on an epoll thread) that each check that every tick after their snapshot arrives
// exactly once and in order. Prints one JSON line.
//
//   stock-load --port 8080 --ws 1000 --sse 100 --seconds 10
import Foundation
import Glibc
import PetrelCore
import PetrelRuntime
import Synchronization

var port: UInt16 = 8080
var wsCount = 1000
var sseCount = 100
var seconds = 10.0
var args = CommandLine.arguments.dropFirst()
while let flag = args.popFirst(), let value = args.popFirst() {
    switch flag {
    case "--port": port = UInt16(value)!
    case "--ws": wsCount = Int(value)!
    case "--sse": sseCount = Int(value)!
    case "--seconds": seconds = Double(value)!
    default: fatalError("unknown option \(flag)")
    }
}

/// What one client saw: the snapshot's id, the last tick id, ticks, and order violations.
struct Tally {
    var snapshot: UInt64 = 0
    var snapshots = 0
    var last: UInt64 = 0
    var ticks = 0
    var errors = 0
    var closed = false

    mutating func message(_ bytes: UnsafeRawBufferPointer) {
        // {"type":"snapshot","id":N,...} or {"type":"tick","id":N,...}
        guard let id = number(after: "\"id\":", in: bytes) else { return self.errors += 1 }
        if bytes.count > 9 && bytes[9] == UInt8(ascii: "s") {
            self.snapshots += 1
            self.snapshot = id
            self.last = id
        } else {
            if self.snapshots == 0 || id != self.last + 1 { self.errors += 1 }
            self.last = id
            self.ticks += 1
        }
    }
}

func number(after key: StaticString, in bytes: UnsafeRawBufferPointer) -> UInt64? {
    let k = UnsafeRawBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount)
    guard bytes.count > k.count else { return nil }
    var i = 0
    while i + k.count <= bytes.count {
        if memcmp(bytes.baseAddress! + i, k.baseAddress!, k.count) == 0 {
            var j = i + k.count
            var v: UInt64 = 0
            var digits = 0
            while j < bytes.count, bytes[j] >= 0x30, bytes[j] <= 0x39 {
                v = v * 10 + UInt64(bytes[j] - 0x30)
                j += 1
                digits += 1
            }
            return digits > 0 ? v : nil
        }
        i += 1
    }
    return nil
}

// ---- WebSocket clients: callbacks on Petrel's client loop thread (one thread: no locks needed
// there, but the main thread reads the tallies at the end under this lock).
let wsTallies = Mutex<[Tally]>(Array(repeating: Tally(), count: wsCount))
let opened = Atomic<Int>(0)
let failed = Atomic<Int>(0)
var configuration = ClientConfiguration()
configuration.compression = nil
var connections: [Connection] = []
/// The handlers of client `i` (a plain function, so that the closures are not main-actor ones:
/// they run on the client loop thread).
func handlers(_ i: Int) -> Handlers {
    let handlers = Handlers()
    handlers.onOpen = { _ in opened.add(1, ordering: .relaxed) }
    handlers.onMessage = { _, _, payload in wsTallies.withLock { $0[i].message(payload) } }
    handlers.onClose = { _, _, _ in wsTallies.withLock { $0[i].closed = true } }
    handlers.onConnectFailed = { _, _ in failed.add(1, ordering: .relaxed) }
    return handlers
}
for i in 0..<wsCount {
    let handlers = handlers(i)
    connections.append(try ClientConnector.connect(to: "ws://127.0.0.1:\(port)/stream", configuration: configuration, handlers: handlers))
    if i % 100 == 99 { usleep(5_000) }  // stay under the listen backlog
}

// ---- SSE clients: raw sockets, one epoll thread.
final class SSEClient {
    let fd: Int32
    var buffer: [UInt8] = []
    var tally = Tally()
    init(fd: Int32) { self.fd = fd }

    /// Takes complete events (blank-line separated) out of the buffer.
    func drain() {
        while let end = self.find([0x0A, 0x0A]) {
            let event = Array(self.buffer[0..<end])
            self.buffer.removeFirst(end + 2)
            // The HTTP head comes first; then each event's data: line holds the JSON.
            guard let d = event.firstRange(of: Array("data: ".utf8)) else { continue }
            event[d.upperBound...].withUnsafeBytes { self.tally.message($0) }
        }
    }

    private func find(_ pattern: [UInt8]) -> Int? { self.buffer.firstRange(of: pattern)?.lowerBound }
}

nonisolated(unsafe) let sseClients: [SSEClient] = (0..<sseCount).map { _ in
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = port.bigEndian
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    precondition(rc == 0, "SSE connect failed")
    let request = "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    _ = request.withCString { send(fd, $0, strlen($0), 0) }
    _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    return SSEClient(fd: fd)
}
let sseStop = Atomic<Bool>(false)
let sseLock = Mutex<Void>(())
let sseThread = Thread {
    var fds = sseClients.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
    var buf = [UInt8](repeating: 0, count: 65536)
    while !sseStop.load(ordering: .relaxed) {
        guard poll(&fds, nfds_t(fds.count), 100) > 0 else { continue }
        sseLock.withLock { _ in
            for k in fds.indices where fds[k].revents != 0 {
                let c = sseClients[k]
                while true {
                    let r = buf.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, $0.count, 0) }
                    if r <= 0 {
                        if r == 0 {
                            c.tally.closed = true
                            fds[k].fd = -1
                        }
                        break
                    }
                    c.buffer += buf[0..<r]
                }
                c.drain()
            }
        }
    }
}
sseThread.start()

// Wait until everyone has a snapshot, then measure for the given time.
let connectDeadline = Date().addingTimeInterval(30)
func snapshotsIn() -> Int {
    wsTallies.withLock { $0.filter { $0.snapshots > 0 }.count } + sseLock.withLock { _ in sseClients.filter { $0.tally.snapshots > 0 }.count }
}
while snapshotsIn() < wsCount + sseCount && Date() < connectDeadline && failed.load(ordering: .relaxed) == 0 { usleep(50_000) }
let ready = snapshotsIn()
print("stock-load: \(ready) of \(wsCount + sseCount) clients have their snapshot; measuring for \(seconds) s", to: &standardError)
// The script reads the server's CPU time over this window: tell it when it starts and ends.
print("stock-load: window start", to: &standardError)
Thread.sleep(forTimeInterval: seconds)
print("stock-load: window end", to: &standardError)
// Every client must receive every tick: take the newest id any client has seen at the end of the
// window (the cut) and give the others up to 5 s to reach it. A client that reaches it with no
// order error has had every tick from its snapshot to the cut, exactly once and in order. (At
// the cut, a client may be a few ticks behind while one fan-out is still being written; that is
// in flight, not lost, and it is reported as maxBehind.)
func tallies() -> [Tally] { wsTallies.withLock { $0 } + sseLock.withLock { _ in sseClients.map(\.tally) } }
let atCut = tallies()
let cut = atCut.map(\.last).max() ?? 0
let behind = atCut.map { cut - $0.last }.max() ?? 0
let catchUpDeadline = Date().addingTimeInterval(5)
var all = tallies()
while all.contains(where: { $0.last < cut }) && Date() < catchUpDeadline {
    usleep(20_000)
    all = tallies()
}
for c in connections { c.close() }
sseStop.store(true, ordering: .relaxed)
Thread.sleep(forTimeInterval: 0.3)
let lagging = all.filter { $0.last < cut }.count
let errors = all.map(\.errors).reduce(0, +)
let ticks = all.map(\.ticks).reduce(0, +)
let ok = ready == wsCount + sseCount && errors == 0 && lagging == 0 && all.allSatisfy { !$0.closed }
print(
    "{\"ws\":\(wsCount),\"sse\":\(sseCount),\"ready\":\(ready),\"connectFailures\":\(failed.load(ordering: .relaxed)),"
        + "\"deliveries\":\(ticks),\"orderErrors\":\(errors),\"maxBehind\":\(behind),\"laggingAfter5s\":\(lagging),\"closedEarly\":\(all.filter(\.closed).count),"
        + "\"minTicksPerClient\":\(all.map(\.ticks).min() ?? 0),\"ok\":\(ok)}")
exit(ok ? 0 : 1)

nonisolated(unsafe) var standardError = FileHandleOutput()
struct FileHandleOutput: TextOutputStream {
    mutating func write(_ string: String) { FileHandle.standardError.write(Data(string.utf8)) }
}
