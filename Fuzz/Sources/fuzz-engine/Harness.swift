// What the Redis Streams engine reads: engine URLs (configuration, RedisAddress) and stream
// entries (StreamEntry: an id "<epoch>-<sequence>" and fields k, c, p), which anyone who can
// write to the Redis could forge. Input: a selector byte, then for an even selector the URL,
// for an odd one the id and the fields, separated by NUL bytes.
// Oracle: a URL that parses prints as one that parses to the same endpoint; an entry that
// decodes has its epoch and sequence in range, its payload is the last `p` field given, and
// writing it back (canonical id, StreamEntry.fields) decodes to the same entry.
import FuzzSupport
import PetrelCore
import PetrelRuntime

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let rest = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    if data[0] & 1 == 0 {
        guard let address = try? RedisAddress(String(decoding: rest, as: UTF8.self)) else { return 0 }
        guard let again = try? RedisAddress(address.description), again.endpoint == address.endpoint else {
            fatalError("\(address) does not parse back to itself")
        }
        return 0
    }
    let parts = rest.split(separator: 0, omittingEmptySubsequences: false).map(Array.init)
    guard let id = parts.first, let entry = StreamEntry(id: id, fields: Array(parts.dropFirst())) else { return 0 }
    precondition(EventIDLayout.epochs.contains(entry.epoch) && EventIDLayout.sequences.contains(entry.sequence))
    precondition(EventIDLayout.epoch(of: entry.eventID) == entry.epoch && EventIDLayout.sequence(of: entry.eventID) == entry.sequence)
    let fields = Array(parts.dropFirst())
    let lastPayload = Array(stride(from: 0, to: fields.count - 1, by: 2)).last { fields[$0] == [UInt8(ascii: "p")] }.map { fields[$0 + 1] }
    precondition(lastPayload == entry.payload, "the payload is the last p field")
    let written = StreamEntry(
        id: Array("\(entry.epoch)-\(entry.sequence)".utf8), fields: StreamEntry.fields(kind: entry.kind, key: entry.key, payload: entry.payload))
    precondition(written == entry, "an entry written back decodes to itself")
    return 0
}

@_cdecl("fuzz_engine_main")
public func harnessMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzz)
}
