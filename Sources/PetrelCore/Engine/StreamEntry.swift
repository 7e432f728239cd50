/// How event ids are made with the Redis Streams engine (docs/cluster.md): an epoch in the top
/// bits and the topic's sequence below, so that an id from a history Redis has lost is
/// recognised, not confused with a new one. Ids stay under 2^53, so that JavaScript reads them
/// exactly.
public enum EventIDLayout {
    /// Bits of the sequence: 2^40 messages per topic and epoch.
    public static let sequenceBits: UInt64 = 40
    /// Epochs are 1...4095 (12 bits), drawn at random when a topic's history starts.
    public static let epochs: ClosedRange<UInt64> = 1...4095
    /// Sequences are 1..<2^40.
    public static let sequences: Range<UInt64> = 1..<(1 << 40)

    public static func epoch(of id: UInt64) -> UInt64 { id >> sequenceBits }
    public static func sequence(of id: UInt64) -> UInt64 { id & ((1 << sequenceBits) - 1) }
    public static func id(epoch: UInt64, sequence: UInt64) -> UInt64 { epoch << sequenceBits | sequence }
}

/// One message as the Redis Streams engine keeps it: a stream entry whose id is
/// `<epoch>-<sequence>` and whose fields are `k` (`t` text, `b` binary), `c` (empty, or `=` and
/// the coalescing key) and `p` (the payload). Anything else in Redis under Petrel's keys is not
/// an entry: `init` returns nil for it, and the engine skips it.
public struct StreamEntry: Sendable, Equatable {
    public let epoch: UInt64
    public let sequence: UInt64
    public let kind: MessageKind
    public let key: String?
    public let payload: [UInt8]

    public var eventID: UInt64 { EventIDLayout.id(epoch: self.epoch, sequence: self.sequence) }

    /// `<epoch>-<sequence>` in decimal, epoch and sequence in range; nil otherwise.
    public static func parseID(_ id: [UInt8]) -> (epoch: UInt64, sequence: UInt64)? {
        guard let dash = id.firstIndex(of: UInt8(ascii: "-")),
            let epoch = Self.decimal(id[..<dash]), let sequence = Self.decimal(id[(dash + 1)...]),
            EventIDLayout.epochs.contains(epoch), EventIDLayout.sequences.contains(sequence)
        else { return nil }
        return (epoch, sequence)
    }

    /// 1 to 19 ASCII digits (no sign, no space), as Redis writes ids.
    private static func decimal(_ digits: ArraySlice<UInt8>) -> UInt64? {
        guard (1...19).contains(digits.count) else { return nil }
        var value: UInt64 = 0
        for d in digits {
            guard d >= 0x30 && d <= 0x39 else { return nil }
            value = value * 10 + UInt64(d - 0x30)
        }
        return value
    }

    /// The entry with this id and these fields (name, value, name, value...); nil when the id is
    /// not one of the engine's, a field has no value, or there is no payload.
    public init?(id: [UInt8], fields: [[UInt8]]) {
        guard let (epoch, sequence) = Self.parseID(id), fields.count % 2 == 0 else { return nil }
        var kind = MessageKind.text
        var key: String?
        var payload: [UInt8]?
        var i = 0
        while i < fields.count {
            let value = fields[i + 1]
            switch fields[i] {
            case [UInt8(ascii: "k")]:
                switch value {
                case [UInt8(ascii: "t")]: kind = .text
                case [UInt8(ascii: "b")]: kind = .binary
                default: return nil
                }
            case [UInt8(ascii: "c")]:
                if value.isEmpty {
                    key = nil
                } else {
                    guard value.first == UInt8(ascii: "="), let k = String(validating: value.dropFirst(), as: UTF8.self) else { return nil }
                    key = k
                }
            case [UInt8(ascii: "p")]: payload = value
            default: break  // a field a later version adds
            }
            i += 2
        }
        guard let payload else { return nil }
        self.epoch = epoch
        self.sequence = sequence
        self.kind = kind
        self.key = key
        self.payload = payload
    }

    /// The fields a publish writes (`k`, `c`, `p`): the inverse of `init`.
    public static func fields(kind: MessageKind, key: String?, payload: [UInt8]) -> [[UInt8]] {
        [
            [UInt8(ascii: "k")], [kind == .binary ? UInt8(ascii: "b") : UInt8(ascii: "t")],
            [UInt8(ascii: "c")], key.map { [UInt8(ascii: "=")] + Array($0.utf8) } ?? [],
            [UInt8(ascii: "p")], payload,
        ]
    }
}
