/// A message that carries its own event id: the publisher writes `{{id}}` where the id goes
/// (`{"type":"tick","id":{{id}},...}`), and the engine that gives the id writes it there, in
/// decimal, before any subscriber or the history sees the message. With several servers on one
/// Redis the publisher cannot know the id beforehand; this is how it still reaches the payload.
public enum IDStamp {
    /// The six ASCII bytes `{{id}}`. Only the first occurrence is replaced.
    public static let placeholder: [UInt8] = Array("{{id}}".utf8)

    /// Where the placeholder starts in `payload`, if it is there.
    public static func find(in payload: UnsafeRawBufferPointer) -> Int? {
        let p = Self.placeholder
        guard payload.count >= p.count else { return nil }
        var i = 0
        while i <= payload.count - p.count {
            if payload[i] == p[0] {
                var j = 1
                while j < p.count && payload[i + j] == p[j] { j += 1 }
                if j == p.count { return i }
            }
            i += 1
        }
        return nil
    }

    /// `payload` with its first placeholder replaced by `id` in decimal; nil if it has none.
    public static func stamp(_ payload: [UInt8], id: UInt64) -> [UInt8]? {
        guard let at = payload.withUnsafeBytes({ Self.find(in: $0) }) else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(payload.count + 14)
        out += payload[..<at]
        out += Array(String(id).utf8)
        out += payload[(at + Self.placeholder.count)...]
        return out
    }
}
