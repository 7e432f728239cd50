import PetrelCore
import Testing

/// How the Redis Streams engine reads a stream entry (docs/cluster.md).
@Suite("Stream entries and event ids")
struct StreamEntryTests {
    func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    @Test("an entry decodes: id, kind, coalescing key, payload; and writes back to itself")
    func decode() throws {
        let entry = try #require(StreamEntry(id: bytes("17-42"), fields: [bytes("k"), bytes("b"), bytes("c"), bytes("=AAPL"), bytes("p"), [0, 1, 2]]))
        #expect(entry.epoch == 17 && entry.sequence == 42 && entry.kind == .binary && entry.key == "AAPL" && entry.payload == [0, 1, 2])
        #expect(entry.eventID == 17 << 40 | 42)
        #expect(StreamEntry(id: bytes("17-42"), fields: StreamEntry.fields(kind: .binary, key: "AAPL", payload: [0, 1, 2])) == entry)
        let plain = try #require(StreamEntry(id: bytes("1-1"), fields: [bytes("p"), bytes("hi"), bytes("later"), bytes("x")]))
        #expect(plain.kind == .text && plain.key == nil && plain.payload == bytes("hi"))
    }

    @Test("ids and fields that are not the engine's are refused")
    func refuse() {
        let p = [bytes("p"), bytes("x")]
        for id in ["0-1", "4096-1", "1-0", "1-1099511627776", "1", "-1", "1-", "a-1", "1-1-1", " 1-1", "18446744073709551616-1"] {
            #expect(StreamEntry(id: bytes(id), fields: p) == nil, "\(id)")
        }
        #expect(StreamEntry(id: bytes("1-1"), fields: []) == nil)  // no payload
        #expect(StreamEntry(id: bytes("1-1"), fields: [bytes("p")]) == nil)  // a field without its value
        #expect(StreamEntry(id: bytes("1-1"), fields: p + [bytes("k"), bytes("x")]) == nil)  // an unknown kind
        #expect(StreamEntry(id: bytes("1-1"), fields: p + [bytes("c"), bytes("AAPL")]) == nil)  // a key without its '='
    }

    @Test("an event id keeps its epoch in bits 40 to 51 and stays under 2^53")
    func layout() {
        let id = EventIDLayout.id(epoch: 4095, sequence: (1 << 40) - 1)
        #expect(id < 1 << 53)
        #expect(EventIDLayout.epoch(of: id) == 4095 && EventIDLayout.sequence(of: id) == (1 << 40) - 1)
    }
}
