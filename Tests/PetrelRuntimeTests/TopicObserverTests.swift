import Foundation
import PetrelCore
@testable import PetrelRuntime
import Testing

/// `Server.observe` and `publish(stampID:)`: state kept from a topic on every node, and
/// payloads that carry their own id.
@Suite("Topic observers and id stamps", .serialized)
struct TopicObserverTests {
    /// A server whose observer of "t" records (id, payload); `engine` nil for in-process.
    func observed(_ engine: RedisProcess?, replay: Int = 100) throws -> (Server, Seen) {
        var configuration = ServerConfiguration(host: "127.0.0.1", port: 0)
        configuration.threads = 2
        if let engine {
            configuration.engine = .redis(engine.address)
            configuration.engineTimeout = 1_000
        }
        configuration.defaultTopicPolicy = TopicPolicy(slowConsumer: .dropOldest, replayCapacity: replay)
        let handlers = Handlers()
        handlers.onOpen = { conn in conn.subscribe("t") }
        let server = Server(configuration: configuration, handlers: handlers)
        let seen = Seen()
        try server.observe("t") { frame in
            seen.withLock { $0.append((frame.eventID, String(decoding: frame.payload, as: UTF8.self))) }
        }
        try server.start()
        return (server, seen)
    }

    @Test("IDStamp writes the id over the first {{id}} only; none is nil")
    func stamp() {
        #expect(IDStamp.stamp(Array("{\"id\":{{id}},\"x\":\"{{id}}\"}".utf8), id: 42) == Array("{\"id\":42,\"x\":\"{{id}}\"}".utf8))
        #expect(IDStamp.stamp(Array("{{id}}".utf8), id: UInt64(1) << 52) == Array("4503599627370496".utf8))
        #expect(IDStamp.stamp(Array("{{id}".utf8), id: 1) == nil)
        #expect(IDStamp.stamp([], id: 1) == nil)
    }

    @Test("in-process: the observer sees each publish once, in order, stamped; no {{id}} is refused")
    func inProcess() throws {
        let (server, seen) = try self.observed(nil)
        defer { server.stop(grace: 100) }
        let client = try TestClient.connect("ws://127.0.0.1:\(server.port)/")
        #expect(waitUntil { server.loops.map { $0.topics["t"]?.count ?? 0 }.reduce(0, +) == 1 })
        for _ in 1...5 { try server.publish("t", text: "{\"id\":{{id}}}", stampID: true) }
        #expect(seen.withLock { $0.map(\.0) } == [1, 2, 3, 4, 5])
        #expect(seen.withLock { $0.map(\.1) } == (1...5).map { "{\"id\":\($0)}" })
        for i in 1...5 { #expect(client.receive(timeout: 5) == .text("{\"id\":\(i)}")) }
        #expect(throws: RuntimeError.self) { try server.publish("t", text: "no placeholder", stampID: true) }
        #expect(server.statistics(topic: "t").lastEventID == 5)
        #expect(throws: RuntimeError.self) { try server.observe("u") { _ in } }
    }

    @Test("Redis: a node started late gets the history at start, then every message any node publishes, stamped by Redis")
    func acrossNodes() throws {
        let redis = try RedisProcess()
        defer { redis.stop() }
        let (a, seenA) = try self.observed(redis)
        defer { a.stop(grace: 100) }
        var ids: [UInt64] = []
        for _ in 1...30 { ids.append(try a.publish("t", text: "{\"id\":{{id}}}", stampID: true)) }
        let (b, seenB) = try self.observed(redis, replay: 10)
        defer { b.stop(grace: 100) }
        // B's observer had the last 10 before start returned.
        #expect(seenB.withLock { $0.map(\.0) } == Array(ids[20...]))
        let client = try TestClient.connect("ws://127.0.0.1:\(b.port)/")
        #expect(waitUntil { b.loops.map { $0.topics["t"]?.count ?? 0 }.reduce(0, +) == 1 })
        for _ in 1...20 { ids.append(try b.publish("t", text: "{\"id\":{{id}}}", stampID: true)) }
        #expect(waitUntil { seenA.withLock { $0.count } == 50 && seenB.withLock { $0.count } == 30 })
        #expect(seenA.withLock { $0.map(\.0) } == ids)
        #expect(seenB.withLock { $0.map(\.0) } == Array(ids[20...]))
        for (id, text) in seenA.withLock({ $0 }) { #expect(text == "{\"id\":\(id)}") }
        for id in ids[30...] { #expect(client.receive(timeout: 5) == .text("{\"id\":\(id)}")) }
        // The stream holds the stamped payloads: a resume from it reads them so.
        #expect(b.replay(topic: "t", after: ids[4])?.map { String(decoding: $0.payload, as: UTF8.self) } == ids[5...].map { "{\"id\":\($0)}" })
        #expect(throws: RuntimeError.self) { try b.publish("t", text: "none", stampID: true) }
    }

    @Test("an observer may stop the server from the engine's reader thread: it stops, nothing hangs")
    func stopFromObserver() throws {
        let redis = try RedisProcess()
        defer { redis.stop() }
        var configuration = ServerConfiguration(host: "127.0.0.1", port: 0)
        configuration.engine = .redis(redis.address)
        let server = Server(configuration: configuration, handlers: Handlers())
        let onReader = Lock(false)
        try server.observe("t") { [unowned server] frame in
            guard frame.payload == Array("stop".utf8) else { return }
            onReader.withLock { $0 = server.isCurrentEngineThread }
            server.stop(grace: 100)
        }
        try server.start()
        try server.publish("t", text: "stop")
        #expect(waitUntil { !server.isRunning })
        #expect(onReader.withLock { $0 })
        server.stop(grace: 100)  // again, from this thread: nothing left to do
    }

    @Test("Redis stamps the largest id exactly (epoch 4095, the last sequence: 2^52 - 1), then refuses the next publish")
    func largestID() throws {
        let redis = try RedisProcess()
        defer { redis.stop() }
        _ = try redis.command("SET", "petrel:{e}:e", "4095")
        _ = try redis.command("SET", "petrel:{e}:n", String((UInt64(1) << 40) - 2))
        let (a, _) = try self.observed(redis)
        defer { a.stop(grace: 100) }
        let id = try a.publish("e", text: "{\"id\":{{id}}}", stampID: true)
        #expect(id == (UInt64(1) << 52) - 1)
        #expect(waitUntil { a.statistics(topic: "e").lastEventID == id })
        #expect(a.replay(topic: "e", after: id - 1)?.map { String(decoding: $0.payload, as: UTF8.self) } == ["{\"id\":4503599627370495}"])
        #expect(throws: RuntimeError.self) { try a.publish("e", text: "{{id}}", stampID: true) }
    }
}

/// What an observer saw: (id, payload as text), in call order.
final class Seen: Sendable {
    private let list = Lock<[(UInt64, String)]>([])
    func withLock<R>(_ body: (inout [(UInt64, String)]) -> R) -> R { self.list.withLock { body(&$0) } }
}
