@testable import PetrelCore
import Testing

/// A server session fed client frames; answers every application question with yes.
private struct Harness {
    var session: StompServerSession
    var events: [StompServerSession.Event] = []

    init(options: StompServerOptions = StompServerOptions()) { self.session = StompServerSession(options: options) }

    /// Feeds `text` and answers each event as an application that allows everything does.
    mutating func feed(_ text: String) {
        Array(text.utf8).withUnsafeBytes { self.session.receive($0) }
        while let e = self.session.nextEvent() {
            self.events.append(e)
            switch e {
            case .connect(let r): self.session.accept(r, session: "s-1")
            case .subscribe(let s, let receipt): self.session.subscribe(s, receipt: receipt)
            case .send(_, _, let receipt): self.session.complete(receipt: receipt)
            default: break
            }
        }
    }

    /// The frames written since the last call, parsed back.
    mutating func written() -> [StompFrame] {
        var parser = StompParser()
        parser.version = self.session.version
        for o in self.session.output { parser.append(o) }
        self.session.output = []
        var out: [StompFrame] = []
        while let f = try? parser.next() { out.append(f) }
        return out
    }
}

@Suite("STOMP server session")
struct StompServerSessionTests {
    @Test("CONNECT: the highest common version, heart-beats agreed as the spec's max rule")
    func connect() {
        var h = Harness()
        h.feed("CONNECT\naccept-version:1.0,1.2,1.1\nhost:x\nheart-beat:5000,20000\n\n\0")
        let connected = h.written().first
        #expect(connected?.command == .connected && connected?["version"] == "1.2" && connected?["heart-beat"] == "10000,10000")
        #expect(connected?["session"] == "s-1")
        #expect(h.session.sendHeartBeatEvery == 20_000 && h.session.expectHeartBeatEvery == 10_000)
        var old = Harness()
        old.feed("STOMP\n\n\0")
        #expect(old.session.version == .v1_0 && old.session.sendHeartBeatEvery == 0)
        var none = Harness()
        none.feed("CONNECT\naccept-version:2.0\n\n\0")
        let refused = none.written().first
        #expect(refused?.command == .error && none.session.state == .closed)
    }

    @Test("frames before CONNECT, server frames, bodies where none belong, missing headers: ERROR and closed")
    func violations() {
        for bad in [
            "SEND\ndestination:/a\n\n\0",
            "CONNECT\naccept-version:1.2\n\n\0CONNECT\naccept-version:1.2\n\n\0",
            "CONNECT\naccept-version:1.2\n\n\0MESSAGE\n\n\0",
            "CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:1\n\n\0",
            "CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:1\ndestination:/a\nack:sometimes\n\n\0",
            "CONNECT\naccept-version:1.2\n\n\0UNSUBSCRIBE\nid:9\nreceipt:r\n\n\0",
            "CONNECT\naccept-version:1.2\n\n\0BEGIN\ntransaction:t\n\nbody\0",
            "CONNECT\naccept-version:1.2\nheart-beat:x\n\n\0",
            "CONNECT\naccept-version:1.2\nheart-beat:4000000000000000000,0\n\n\0",  // would overflow the grace
            "CONNECT\naccept-version:1.2\nheart-beat:0,3600001\n\n\0",
        ] {
            var h = Harness()
            h.feed(bad)
            let last = h.written().last
            #expect(last?.command == .error && h.session.state == .closed, "\(bad.debugDescription)")
            if bad.contains("receipt:r") { #expect(last?["receipt-id"] == "r") }
        }
    }

    @Test("receipts follow the frames that ask; DISCONNECT's receipt comes last")
    func receipts() {
        var h = Harness()
        h.feed("CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:0\ndestination:/topic/a\nreceipt:r1\n\n\0")
        h.feed("SEND\ndestination:/topic/a\nreceipt:r2\n\nx\0UNSUBSCRIBE\nid:0\nreceipt:r3\n\n\0DISCONNECT\nreceipt:r4\n\n\0")
        let receipts = h.written().filter { $0.command == .receipt }.map { $0["receipt-id"] }
        #expect(receipts == ["r1", "r2", "r3", "r4"])
        #expect(h.events.last == .disconnect && h.session.state == .closed)
    }

    @Test("client mode ACK is cumulative; client-individual settles one; the position is kept")
    func acks() {
        var h = Harness()
        h.feed("CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:c\ndestination:/a\nack:client\n\n\0")
        h.feed("SUBSCRIBE\nid:i\ndestination:/b\nack:client-individual\n\n\0")
        for id in [UInt64(3), 4, 5] {
            let c = h.session.delivered(subscription: "c", eventID: id)
            let i = h.session.delivered(subscription: "i", eventID: id)
            #expect(c && i)
        }
        h.feed("ACK\nid:4@c\n\n\0ACK\nid:4@i\n\n\0")
        #expect(h.events.suffix(2) == [.ack(subscription: "c", eventIDs: [3, 4]), .ack(subscription: "i", eventIDs: [4])])
        #expect(h.session.subscriptions["c"]?.acknowledged == 4 && Array(h.session.subscriptions["c"]!.unacknowledged) == [5])
        #expect(h.session.subscriptions["i"]?.acknowledged == 2 && Array(h.session.subscriptions["i"]!.unacknowledged) == [3, 5])
        h.feed("NACK\nid:3@i\n\n\0ACK\nid:3@i\n\n\0")
        #expect(h.events.suffix(2) == [.nack(subscription: "i", eventIDs: [3]), .ack(subscription: "i", eventIDs: [])])
        #expect(h.session.subscriptions["i"]?.acknowledged == 4)
        h.feed("ACK\nid:5@nobody\n\n\0")
        let last = h.written().last
        #expect(last?.command == .error)
    }

    @Test("1.1 acknowledges by subscription and message-id")
    func acks11() {
        var h = Harness()
        h.feed("CONNECT\naccept-version:1.1\n\n\0SUBSCRIBE\nid:c\ndestination:/a\nack:client\n\n\0")
        _ = h.session.delivered(subscription: "c", eventID: 7)
        h.feed("ACK\nsubscription:c\nmessage-id:7\n\n\0")
        #expect(h.events.last == .ack(subscription: "c", eventIDs: [7]))
    }

    @Test("a cap on unacknowledged messages holds the next until an ACK makes room")
    func cap() {
        var options = StompServerOptions()
        options.maxUnacknowledged = 2
        var h = Harness(options: options)
        h.feed("CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:c\ndestination:/a\nack:client-individual\n\n\0")
        let first = h.session.delivered(subscription: "c", eventID: 1), second = h.session.delivered(subscription: "c", eventID: 2)
        let third = h.session.delivered(subscription: "c", eventID: 3)
        #expect(first && second && !third && !h.session.hasRoom(subscription: "c"))
        h.feed("ACK\nid:1@c\n\n\0")
        #expect(h.session.hasRoom(subscription: "c"))
    }

    @Test("without a cap, a subscription remembers a bounded number of unacknowledged ids")
    func remembered() {
        var options = StompServerOptions()
        options.maxRemembered = 100
        var h = Harness(options: options)
        h.feed("CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:c\ndestination:/a\nack:client\n\n\0")
        for id in UInt64(1)...10_000 { _ = h.session.delivered(subscription: "c", eventID: id) }
        let s = h.session.subscriptions["c"]!
        #expect(s.unacknowledged.count == 100 && s.unacknowledged.first == 9_901 && s.acknowledged == 9_900)
        #expect(s.pending.count < 300)  // the forgotten ones are given back
    }

    @Test("transactions hold a bounded number of bytes")
    func transactionBytes() {
        var options = StompServerOptions()
        options.maxTransactionBytes = 100
        var h = Harness(options: options)
        h.feed("CONNECT\naccept-version:1.2\n\n\0BEGIN\ntransaction:t\n\n\0")
        h.feed("SEND\ndestination:/a\ntransaction:t\n\n" + String(repeating: "x", count: 60) + "\0")
        #expect(h.session.state == .connected)
        h.feed("SEND\ndestination:/a\ntransaction:t\n\n" + String(repeating: "x", count: 60) + "\0")
        let last = h.written().last
        #expect(last?.command == .error && h.session.state == .closed)
    }

    @Test("a cap above what is remembered without one is kept")
    func capOverRemembered() {
        var options = StompServerOptions()
        options.maxRemembered = 10
        options.maxUnacknowledged = 20
        var h = Harness(options: options)
        h.feed("CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:c\ndestination:/a\nack:client\n\n\0")
        var accepted = 0
        for id in UInt64(1)...30 where h.session.delivered(subscription: "c", eventID: id) { accepted += 1 }
        #expect(accepted == 20 && h.session.subscriptions["c"]?.acknowledged == 0)
    }

    @Test("a transaction holds its SENDs and ACKs until COMMIT; ABORT drops them")
    func transactions() {
        var h = Harness()
        h.feed("CONNECT\naccept-version:1.2\n\n\0BEGIN\ntransaction:t\n\n\0SEND\ndestination:/a\ntransaction:t\n\n1\0")
        #expect(!h.events.contains { if case .send = $0 { return true } else { return false } })
        h.feed("COMMIT\ntransaction:t\n\n\0BEGIN\ntransaction:u\n\n\0SEND\ndestination:/a\ntransaction:u\n\n2\0ABORT\ntransaction:u\n\n\0")
        let sent = h.events.compactMap { if case .send(let f, _, _) = $0 { return f.body } else { return nil } }
        #expect(sent == [Array("1".utf8)])
        // Receipts: the SEND's once, when it is held; the COMMIT's after its frames.
        h.feed("BEGIN\ntransaction:v\n\n\0SEND\ndestination:/a\ntransaction:v\nreceipt:r1\n\n4\0COMMIT\ntransaction:v\nreceipt:c\n\n\0")
        let receipts = h.written().filter { $0.command == .receipt }.map { $0["receipt-id"] ?? "" }
        #expect(receipts == ["r1", "c"])
        #expect(h.events.last == .send(StompFrame(.send, [StompHeader("destination", "/a"), StompHeader("transaction", "v")], body: Array("4".utf8)), destination: "/a", receipt: nil))
        h.feed("SEND\ndestination:/a\ntransaction:u\n\n3\0")
        let last = h.written().last
        #expect(last?.command == .error)
    }

    @Test("a MESSAGE frame: subscription, message-id, destination, ack in client modes, content-length")
    func message() {
        let body: [UInt8] = Array("{\"p\":1}".utf8)
        let wire = body.withUnsafeBytes {
            StompServerSession.message(destination: "/topic/a:b", subscription: "sub-0", eventID: 42, ack: true, body: $0, version: .v1_2)
        }
        var p = StompParser()
        p.append(wire)
        let f = try? p.next()
        #expect(f?.command == .message && f?["subscription"] == "sub-0" && f?["message-id"] == "42")
        #expect(f?["destination"] == "/topic/a:b" && f?["ack"] == "42@sub-0" && f?["content-length"] == "7" && f?.body == body)
    }
}
