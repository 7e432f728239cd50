import Foundation
import Glibc
@testable import PetrelRuntime

/// A real `redis-server` (Debian's package, which `make test` installs) as a child process on
/// loopback: its own port, no persistence, its own folder; killed by `stop()` or at deinit.
final class RedisProcess: @unchecked Sendable {
    let port: Int
    let folder: String
    private var process: Process?
    var url: String { "redis://127.0.0.1:\(self.port)" }
    var address: RedisAddress { try! RedisAddress(self.url) }

    init() throws {
        self.port = try freeTCPPort()
        self.folder = NSTemporaryDirectory() + "petrel-redis-\(getpid())-\(self.port)"
        try FileManager.default.createDirectory(atPath: self.folder, withIntermediateDirectories: true)
        try self.start()
    }

    deinit { self.stop() }

    /// Starts it (again, after `stop`, on the same port): empty, as after a restart without persistence.
    func start() throws {
        let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let binary else {
            throw RuntimeError(.configuration, "redis-server is not installed (make test installs Debian's redis-server)")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = ["--port", String(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                       "--dir", self.folder, "--logfile", self.folder + "/redis.log"]
        try p.run()
        self.process = p
        let link = RedisLink(self.address, timeout: 500)
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if (try? link.command("PING")) == .status("PONG") { return }
            usleep(10_000)
        }
        throw RuntimeError(.engine, "redis-server on port \(self.port) did not answer within 10 s")
    }

    /// Kills it at once (SIGKILL): whatever it held is gone.
    func stop() {
        guard let p = self.process else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        self.process = nil
    }

    /// One command on a link of its own (the test's, like redis-cli).
    @discardableResult
    func command(_ arguments: String...) throws -> RedisReply {
        let link = RedisLink(self.address, timeout: 2_000)
        return try link.command(arguments.map { Array($0.utf8) })
    }
}

/// A TCP port that was free a moment ago (bound to 0 and read back).
func freeTCPPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &address) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard ok else { throw RuntimeError(.bind, "no free port") }
    return Int(UInt16(bigEndian: address.sin_port))
}
