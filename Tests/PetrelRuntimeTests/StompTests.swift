import Foundation
import PetrelCore
@testable import PetrelRuntime
import Testing

/// A STOMP client over the test WebSocket client: frames out as text messages, frames in parsed
/// from whatever messages they arrive in (heart-beats counted).
private final class StompClient {
    let ws: TestClient
    var parser = StompParser()
    var heartbeats = 0
    var closed: Received?

    init(port: UInt16, path: String = "/stomp", subprotocols: [String] = []) throws {
        var config = ClientConfiguration()
        config.subprotocols = subprotocols
        config.compression = nil
        self.ws = try TestClient.connect("ws://127.0.0.1:\(port)\(path)", configuration: config)
    }

    func send(_ frame: String) { self.ws.send(frame) }

    func connect(_ extra: String = "") -> StompFrame? {
        self.send("CONNECT\naccept-version:1.2\nhost:test\n\(extra)\n\0")
        return self.next()
    }

    /// The next frame (heart-beats skipped and counted), or nil after `timeout` or a close.
    func next(timeout: Double = 3) -> StompFrame? {
        let end = Date().addingTimeInterval(timeout)
        while true {
            if let f = try? self.parser.next() { return f }
            guard self.closed == nil, let r = self.ws.receive(timeout: max(0, end.timeIntervalSinceNow)) else { return nil }
            switch r {
            case .text(let t):
                if t == "\n" { self.heartbeats += 1 } else { self.parser.append(Array(t.utf8)) }
            case .binary(let b): self.parser.append(b)
            case .closed: self.closed = r
            }
        }
    }

    /// Frames until nil (a quiet `timeout`, or the close).
    func drain(timeout: Double = 0.3) -> [StompFrame] {
        var out: [StompFrame] = []
        while let f = self.next(timeout: timeout) { out.append(f) }
        return out
    }
}

private func stompServer(_ tune: (inout ServerConfiguration, Handlers) -> Void = { _, _ in }) throws -> Server {
    try startEchoServer { c, h in
        var stomp = StompConfiguration(paths: ["/stomp"])
        stomp.options.limits = StompLimits(maxHeaders: 16, maxLineBytes: 256, maxBodyBytes: 1024)
        c.stomp = stomp
        c.defaultTopicPolicy.replayCapacity = 100
        tune(&c, h)
    }
}

extension RuntimeTests {
    @Suite("STOMP server mode")
    struct StompTests {
        @Test("SUBSCRIBE with last-event-id replays from the ring, then goes on live, without a repeat")
        func resume() throws {
            let server = try stompServer()
            defer { server.stop(grace: 100) }
            for i in 1...5 { try server.publish("t", text: "m\(i)") }
            let c = try StompClient(port: server.port)
            #expect(c.connect()?.command == .connected)
            c.send("SUBSCRIBE\nid:sub-0\ndestination:/topic/t\nlast-event-id:2\nreceipt:r\n\n\0")
            var frames = c.drain()
            try server.publish("t", text: "m6")
            frames += c.drain()
            #expect(frames.first?.command == .receipt)
            let messages = frames.filter { $0.command == .message }
            #expect(messages.map { String(decoding: $0.body, as: UTF8.self) } == ["m3", "m4", "m5", "m6"])
            #expect(messages.map { $0["message-id"] } == ["3", "4", "5", "6"])
            #expect(messages.allSatisfy { $0["subscription"] == "sub-0" && $0["destination"] == "/topic/t" && $0["ack"] == nil })
        }

        @Test("two subscriptions to one topic each get every message, with their own ids; UNSUBSCRIBE stops one")
        func twoSubscriptions() throws {
            let server = try stompServer()
            defer { server.stop(grace: 100) }
            let c = try StompClient(port: server.port)
            _ = c.connect()
            c.send("SUBSCRIBE\nid:a\ndestination:/topic/t\n\n\0SUBSCRIBE\nid:b\ndestination:/topic/t\nack:client\nreceipt:r\n\n\0")
            #expect(c.next()?.command == .receipt)
            try server.publish("t", text: "x")
            let got = c.drain()
            #expect(Set(got.map { $0["subscription"] ?? "" }) == ["a", "b"])
            #expect(got.first { $0["subscription"] == "b" }?["ack"] == "1@b")
            c.send("UNSUBSCRIBE\nid:a\nreceipt:u\n\n\0")
            #expect(c.next()?["receipt-id"] == "u")
            try server.publish("t", text: "y")
            #expect(c.drain().map { $0["subscription"] } == ["b"])
        }

        @Test("a lone auto subscription (the fast path), then a second on another topic, then a client-mode one: each frame names its own")
        func fastPathChanges() throws {
            let server = try stompServer()
            defer { server.stop(grace: 100) }
            let c = try StompClient(port: server.port)
            _ = c.connect()
            c.send("SUBSCRIBE\nid:a\ndestination:/topic/t\nreceipt:r1\n\n\0")
            #expect(c.next()?["receipt-id"] == "r1")
            for i in 1...3 { try server.publish("t", text: "t\(i)") }
            #expect(c.drain().map { "\($0["subscription"] ?? "") \(String(decoding: $0.body, as: UTF8.self))" } == ["a t1", "a t2", "a t3"])
            c.send("SUBSCRIBE\nid:b\ndestination:/topic/u\nreceipt:r2\n\n\0")
            #expect(c.next()?["receipt-id"] == "r2")
            try server.publish("t", text: "t4")
            try server.publish("u", text: "u1")
            let both = c.drain().map { "\($0["subscription"] ?? "") \($0["destination"] ?? "") \(String(decoding: $0.body, as: UTF8.self))" }
            #expect(both == ["a /topic/t t4", "b /topic/u u1"])
            c.send("UNSUBSCRIBE\nid:b\n\n\0UNSUBSCRIBE\nid:a\n\n\0SUBSCRIBE\nid:a\ndestination:/topic/t\nack:client-individual\nreceipt:r3\n\n\0")
            #expect(c.next()?["receipt-id"] == "r3")
            try server.publish("t", text: "t5")
            try server.publish("u", text: "u2")
            let last = c.drain()
            #expect(last.map { $0["ack"] } == ["5@a"])
            #expect(last.map { String(decoding: $0.body, as: UTF8.self) } == ["t5"])
        }

        @Test("one MESSAGE frame per subscription id, destination and ack mode, shared by every subscriber")
        func sharedMessageFrames() throws {
            let frame = SharedFrame(topic: "t", key: nil, eventID: 7, kind: .text, payload: Array("p".utf8))
            let a = frame.stompMessage(subscription: "sub-0", destination: "/topic/t", ack: false, version: .v1_2)
            let b = frame.stompMessage(subscription: "sub-0", destination: "/topic/t", ack: false, version: .v1_1)
            let c = frame.stompMessage(subscription: "sub-0", destination: "/topic/t", ack: true, version: .v1_2)
            #expect(a === b && a !== c)
        }

        @Test("a cap on unacknowledged messages holds the rest until an ACK; the hook sees the position")
        func flowControl() throws {
            let acks = Lock<[StompAcknowledgement]>([])
            let server = try stompServer { c, h in
                c.stomp!.options.maxUnacknowledged = 2
                h.onStompAck = { _, ack in acks.withLock { $0.append(ack) } }
            }
            defer { server.stop(grace: 100) }
            let c = try StompClient(port: server.port)
            _ = c.connect()
            c.send("SUBSCRIBE\nid:s\ndestination:/topic/t\nack:client-individual\nreceipt:r\n\n\0")
            #expect(c.next()?.command == .receipt)
            for i in 1...4 { try server.publish("t", text: "m\(i)") }
            #expect(c.drain().map { $0["message-id"] } == ["1", "2"])
            c.send("ACK\nid:1@s\n\n\0NACK\nid:2@s\n\n\0")
            #expect(c.drain().map { $0["message-id"] } == ["3", "4"])
            #expect(acks.withLock { $0 }.map { $0.eventIDs } == [[1], [2]])
            #expect(acks.withLock { $0 }.map { $0.negative } == [false, true])
            #expect(acks.withLock { $0 }.last?.position == 2)
        }

        @Test("garbage, an oversized body, a refused destination: an ERROR frame, then a close; others go on")
        func badInput() throws {
            let server = try stompServer()
            defer { server.stop(grace: 100) }
            for (input, code) in [
                ("HELLO\n\n\0", UInt16(1008)),
                ("CONNECT\naccept-version:1.2\n\n\0SEND\ndestination:/topic/t\ncontent-length:5000\n\n", 1009),
                ("CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:1\ndestination:/queue/x\nreceipt:r9\n\n\0", 1008),
                ("CONNECT\naccept-version:1.2\n\n\0SEND\ndestination:/topic/t\n\nno hook\0", 1008),
            ] {
                let c = try StompClient(port: server.port)
                c.send(input)
                let frames = c.drain(timeout: 2)
                #expect(frames.last?.command == .error, "\(input.debugDescription)")
                if input.contains("r9") { #expect(frames.last?["receipt-id"] == "r9") }
                #expect(c.closed == .closed(code, "STOMP: \(frames.last?["message"] ?? "")"))
            }
            let ok = try StompClient(port: server.port)
            #expect(ok.connect()?.command == .connected)
        }

        @Test("resumes that cannot be written queue behind the output, up to the topic's bound, then close the client")
        func replayUnderBackpressure() throws {
            let server = try stompServer { c, _ in
                c.defaultTopicPolicy.maxQueuedMessages = 200
                c.options.maxBackpressure = 64 * 1024
                c.options.closeTimeout = 300  // the client never answers the close
            }
            defer { server.stop(grace: 100) }
            let body = String(repeating: "p", count: 1000)
            for _ in 1...100 { try server.publish("t", text: body) }
            // A client that never reads, asking for the ring again and again in one message.
            let raw = try RawSocket(port: server.port, receiveBuffer: 4096)
            #expect(raw.handshake(path: "/stomp").hasPrefix("HTTP/1.1 101"))
            var frames = "CONNECT\naccept-version:1.2\n\n\0"
            for _ in 0..<50 { frames += "SUBSCRIBE\nid:a\ndestination:/topic/t\nlast-event-id:0\n\n\0UNSUBSCRIBE\nid:a\n\n\0" }
            raw.write(clientFrame(0x1, Array(frames.utf8)))
            #expect(waitUntil(timeout: 5) { server.connectionCount == 0 }, "the client was not closed")
        }

        @Test("SEND through the hook publishes to a topic, with a receipt")
        func sendHook() throws {
            let server = try stompServer { _, h in
                h.onStompSend = { _, _, destination in destination == "/topic/t" ? .publish(topic: "t") : .refuse("no") }
            }
            defer { server.stop(grace: 100) }
            let c = try StompClient(port: server.port)
            _ = c.connect()
            c.send("SUBSCRIBE\nid:s\ndestination:/topic/t\n\n\0SEND\ndestination:/topic/t\nreceipt:sent\n\nhello\0")
            let frames = c.drain()
            #expect(frames.contains { $0.command == .receipt && $0["receipt-id"] == "sent" })
            #expect(frames.first { $0.command == .message }?.body == Array("hello".utf8))
            #expect(server.statistics(topic: "t").published == 1)
        }

        @Test("heart-beats: the server sends them at the agreed period and closes a client silent for the grace")
        func heartBeats() throws {
            // The server beats every 100 ms and wants one every 200 (closing after three
            // periods): about five beats reach the client before it is closed, so the count
            // below holds on a loaded machine too (at 200 ms it sometimes saw one).
            let server = try stompServer { c, _ in
                c.stomp!.options.heartBeatSend = 100
                c.stomp!.options.heartBeatReceive = 200
                c.stomp!.minimumSilence = 0
            }
            defer { server.stop(grace: 100) }
            let c = try StompClient(port: server.port)
            let connected = c.connect("heart-beat:200,100\n")
            #expect(connected?["heart-beat"] == "100,200")
            let started = Date()
            #expect(c.next(timeout: 3) == nil)
            let silent = Date().timeIntervalSince(started)
            #expect(c.closed == .closed(1001, "STOMP: no heart-beat for 600 ms"))
            #expect(silent > 0.5 && silent < 2, "closed after \(silent) s")
            #expect(c.heartbeats >= 2)
        }

        @Test("with the Redis engine: STOMP subscribers on two nodes get the same ids, and resume on the other node")
        func acrossNodes() throws {
            let redis = try RedisProcess()
            defer { redis.stop() }
            let nodes = try (0..<2).map { _ in
                try stompServer { c, _ in
                    c.engine = .redis(redis.address)
                    c.engineTimeout = 1_000
                }
            }
            defer { for n in nodes { n.stop(grace: 100) } }
            let a = try StompClient(port: nodes[0].port)
            _ = a.connect()
            a.send("SUBSCRIBE\nid:sub-0\ndestination:/topic/t\nreceipt:r\n\n\0")
            #expect(a.next()?.command == .receipt)
            let ids = try (1...6).map { i in try nodes[i % 2].publish("t", text: "m\(i)") }
            let seen = a.drain(timeout: 1).map { $0["message-id"] ?? "" }
            #expect(seen == ids.map { String($0) })
            // A second client resumes on the other node after the third id.
            let b = try StompClient(port: nodes[1].port)
            _ = b.connect()
            b.send("SUBSCRIBE\nid:sub-0\ndestination:/topic/t\nlast-event-id:\(ids[2])\n\n\0")
            let resumed = b.drain(timeout: 1)
            #expect(resumed.map { String(decoding: $0.body, as: UTF8.self) } == ["m4", "m5", "m6"])
            #expect(resumed.map { $0["message-id"] ?? "" } == ids[3...].map { String($0) })
        }

        @Test("a client that offers v12.stomp speaks STOMP on any path; one that does not is plain WebSocket")
        func bySubprotocol() throws {
            let server = try stompServer()
            defer { server.stop(grace: 100) }
            let stomp = try StompClient(port: server.port, path: "/stream", subprotocols: ["v10.stomp", "v12.stomp"])
            #expect(stomp.ws.connection.subprotocol == "v12.stomp")
            #expect(stomp.connect()?.command == .connected)
            let plain = try TestClient.connect("ws://127.0.0.1:\(server.port)/stream")
            plain.send("CONNECT\n\n\0")
            #expect(plain.receive() == .text("CONNECT\n\n\0"))  // the echo server's echo
        }
    }
}
