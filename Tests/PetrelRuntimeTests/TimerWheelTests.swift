@testable import PetrelRuntime
import Glibc
import Testing

/// The loop's timer wheel: a connection is taken when its tick comes, never before and never
/// twice, re-arming only moves it earlier, and leaving takes it out at once.
@Suite("Timer wheel")
struct TimerWheelTests {
    final class Entry: TimerWheelEntry {
        let name: Int
        var timerTick: UInt64 = 0
        var timerIndex = 0
        init(_ name: Int) { self.name = name }
    }

    static func take(_ wheel: inout TimerWheel<Entry>, at now: UInt64) -> [Int] {
        var due: [Entry] = []
        wheel.expire(now: now, into: &due)
        #expect(due.allSatisfy { $0.timerTick == 0 })
        return due.map(\.name)
    }

    @Test("entries come out on the tick their time rounds up to, in tick order")
    func order() {
        var wheel = TimerWheel<Entry>(resolution: 100, now: 10_000)
        let e = (0..<4).map(Entry.init)
        wheel.arm(e[0], at: 10_350)  // tick 104
        wheel.arm(e[1], at: 10_101)  // tick 102
        wheel.arm(e[2], at: 10_200)  // tick 102
        wheel.arm(e[3], at: 9_000)  // in the past: the next tick, 101
        #expect(Self.take(&wheel, at: 10_099).isEmpty)
        #expect(Self.take(&wheel, at: 10_100) == [3])
        #expect(Self.take(&wheel, at: 10_250) == [1, 2])
        #expect(Self.take(&wheel, at: 10_399).isEmpty)
        #expect(Self.take(&wheel, at: 10_400) == [0])
        #expect(wheel.armedCount == 0)
    }

    @Test("arming later keeps the earlier tick; arming earlier moves the entry, once")
    func earliestWins() {
        var wheel = TimerWheel<Entry>(resolution: 10, now: 0)
        let a = Entry(1)
        wheel.arm(a, at: 50)
        wheel.arm(a, at: 90)
        #expect(wheel.armedCount == 1)
        wheel.arm(a, at: 20)
        #expect(wheel.armedCount == 1)
        #expect(Self.take(&wheel, at: 20) == [1])
        #expect(Self.take(&wheel, at: 100).isEmpty)
    }

    @Test("disarming takes an entry out and keeps the others of its slot in place")
    func disarm() {
        var wheel = TimerWheel<Entry>(resolution: 10, now: 0)
        let e = (0..<5).map(Entry.init)
        for x in e { wheel.arm(x, at: 30) }
        wheel.disarm(e[1])
        wheel.disarm(e[4])
        wheel.disarm(e[4])  // twice is harmless
        #expect(e[1].timerTick == 0)
        #expect(Set(Self.take(&wheel, at: 30)) == [0, 2, 3])
    }

    @Test("a time past the wheel's reach comes out at its edge, to be armed again from there")
    func beyondReach() {
        let size = UInt64(TimerWheel<Entry>.size)
        var wheel = TimerWheel<Entry>(resolution: 10, now: 0)
        let far = Entry(7)
        wheel.arm(far, at: 10 * size * 3)
        #expect(far.timerTick == size - 1)
        #expect(Self.take(&wheel, at: 10 * (size - 2)).isEmpty)
        #expect(Self.take(&wheel, at: 10 * (size - 1)) == [7])
        wheel.arm(far, at: 10 * size * 3)
        #expect(Self.take(&wheel, at: 10 * size * 3) == [7])
    }

    @Test("a loop stalled for longer than a turn takes every entry that fell due, once")
    func stalled() {
        let size = UInt64(TimerWheel<Entry>.size)
        var wheel = TimerWheel<Entry>(resolution: 10, now: 0)
        let e = (0..<20).map(Entry.init)
        for (i, x) in e.enumerated() { wheel.arm(x, at: UInt64(i) * 10 * (size / 20)) }
        #expect(Set(Self.take(&wheel, at: 10 * size * 5)) == Set(0..<20))
        #expect(wheel.armedCount == 0)
    }

    @Test("pings keep their interval when it is shorter than the pong timeout (a pong re-arms)")
    func pingsAfterPongs() throws {
        let pongs = Lock(0)
        let server = try startEchoServer { c, handlers in
            c.threads = 1
            c.options.pingInterval = 150
            c.options.pongTimeout = 5_000
            c.timerResolution = 20
            handlers.onPong = { _, _ in pongs.withLock { $0 += 1 } }
        }
        defer { server.stop(grace: 100) }
        let client = try TestClient.connect("ws://127.0.0.1:\(server.port)/")
        defer { client.connection.close() }
        // A ping 150 ms after each pong: about eight in 1.5 s. Armed for the pong deadline
        // instead, the second ping would wait 5 s.
        usleep(1_500_000)
        #expect(pongs.withLock { $0 } >= 4, "\(pongs.withLock { $0 }) pongs in 1.5 s")
    }

    @Test("on a server: an open connection without timers is not armed; with an idle timeout it is")
    func serverArming() throws {
        for idle in [0, 60_000] {
            let server = try startEchoServer { c, _ in
                c.threads = 1
                c.options.idleTimeout = idle
                c.options.handshakeTimeout = 200
                c.timerResolution = 20
            }
            defer { server.stop(grace: 100) }
            let clients = try (0..<5).map { _ in try TestClient.connect("ws://127.0.0.1:\(server.port)/") }
            // Past the handshake deadlines the connections were armed for at accept.
            let armed = { () -> Int in
                let result = Lock(-1)
                server.loops[0].execute(.call { result.withLock { $0 = server.loops[0].armedTimers } })
                _ = waitUntil { result.withLock { $0 } >= 0 }
                return result.withLock { $0 }
            }
            #expect(waitUntil { armed() == (idle == 0 ? 0 : clients.count) }, "idle \(idle): \(armed()) armed")
            clients.forEach { $0.connection.close() }
            #expect(waitUntil { armed() == 0 })
        }
    }
}
