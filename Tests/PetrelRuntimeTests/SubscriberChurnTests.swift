import Dispatch
import Foundation
import Glibc
import PetrelCore
@testable import PetrelRuntime
import Testing

extension RuntimeTests {
    /// Unsubscribing and closing take a subscriber out of its topics in O(1): 10,000 subscribers
    /// leaving at once is linear work, not quadratic. The subscribers here are server-side
    /// connections without a socket (fd -1), made on the loop thread, so that 10,000 of them fit
    /// in the test process's descriptor limit; the last check goes through a real client.
    @Suite("Subscribers: O(1) unsubscribe and close")
    struct SubscriberChurnTests {
        /// Runs `body` on the server's only loop and waits for it.
        static func onLoop<T>(_ server: Server, _ body: @escaping @Sendable () -> T) -> T {
            let done = DispatchSemaphore(value: 0)
            nonisolated(unsafe) var result: T? = nil
            server.loops[0].execute(.call {
                result = body()
                done.signal()
            })
            done.wait()
            return result!
        }

        static func subscribers(_ server: Server, _ count: Int, topic: String) -> [Connection] {
            onLoop(server) {
                (0..<count).map { _ in
                    let c = Connection(serverSideOf: server, loop: server.loops[0], fd: -1, peer: SocketAddress())
                    c.phase = .open
                    c.subscribeOnLoop(topic)
                    return c
                }
            }
        }

        @Test("10,000 subscribers closing at once take well under a second, and the rest still receive")
        func closeMany() throws {
            let server = try startEchoServer { c, h in
                c.threads = 1
                h.onOpen = { conn in conn.subscribe("t") }
            }
            defer { server.stop() }
            let many = Self.subscribers(server, 10_000, topic: "t")
            #expect(Self.onLoop(server) { server.loops[0].topics["t"]?.count } == 10_000)
            let seconds = Self.onLoop(server) { () -> Double in
                let start = DispatchTime.now().uptimeNanoseconds
                for c in many { c.closeTransport(reason: .goingAway, message: "test") }
                return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            }
            print("10,000 subscribers closed in \(String(format: "%.4f", seconds)) s")
            #expect(seconds < 0.5)
            #expect(Self.onLoop(server) { server.loops[0].topics["t"] == nil })
            // A real subscriber that comes after still gets what is published.
            let client = try TestClient.connect("ws://127.0.0.1:\(server.port)/")
            #expect(waitUntil { Self.onLoop(server) { server.loops[0].topics["t"]?.count == 1 } })
            _ = try! server.publish("t", text: "after")
            #expect(client.receive() == .text("after"))
        }

        @Test("unsubscribing any half of 10,000 leaves exactly the other half, each in its own slot")
        func unsubscribeHalf() throws {
            let server = try startEchoServer { c, _ in c.threads = 1 }
            defer { server.stop() }
            let many = Self.subscribers(server, 10_000, topic: "t")
            var rng = SystemRandomNumberGenerator()
            let leaving = Set(many.indices.shuffled(using: &rng).prefix(5_000))
            let seconds = Self.onLoop(server) { () -> Double in
                let start = DispatchTime.now().uptimeNanoseconds
                for i in leaving { many[i].unsubscribeOnLoop("t") }
                return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            }
            print("5,000 of 10,000 subscribers unsubscribed in \(String(format: "%.4f", seconds)) s")
            #expect(seconds < 0.5)
            let ok = Self.onLoop(server) { () -> Bool in
                guard let list = server.loops[0].topics["t"], list.count == 5_000 else { return false }
                let staying = Set(many.indices.filter { !leaving.contains($0) }.map { ObjectIdentifier(many[$0]) })
                guard Set(list.map(ObjectIdentifier.init)) == staying else { return false }
                // Every remaining subscriber's remembered slot points at itself.
                return list.indices.allSatisfy { i in list[i].subscriptions.first { $0.topic == "t" }?.slot == i }
            }
            #expect(ok)
            Self.onLoop(server) { for c in many { c.closeTransport(reason: .goingAway, message: "test") } }
        }
    }
}
