// STOMP frames and the server session (Sources/PetrelCore/Stomp). Input: a configuration byte
// (bits 0-1: maxBodyBytes 0, 16, 1024 or 65536; bits 2-3: maxHeaders 0, 2, 8 or 64; bits 4-5:
// maxLineBytes 8, 64, 1024 or 8192; bit 6: at most 2 unacknowledged messages), then the Chunks
// selector and the client's bytes.
// Oracles: the events do not depend on how the bytes were split; every frame read keeps the
// limits; every frame read encodes and reads back to itself; a session that fails has written an
// ERROR frame last, and nothing after it; the unacknowledged count never passes its cap.
import FuzzSupport
import PetrelCore

let bodies = [0, 16, 1024, 65536]
let headerCounts = [0, 2, 8, 64]
let lines = [8, 64, 1024, 8192]

/// Runs a session over `chunks`, answering yes to everything and delivering three messages to
/// every new subscription; returns the events and everything written.
func run(_ chunks: Chunks, options: StompServerOptions) -> ([StompServerSession.Event], [[UInt8]]) {
    var session = StompServerSession(options: options)
    var events: [StompServerSession.Event] = []
    var written: [[UInt8]] = []
    var next: UInt64 = 1
    chunks.forEach { piece in
        piece.withUnsafeBytes { session.receive($0) }
        while let e = session.nextEvent() {
            events.append(e)
            switch e {
            case .connect(let r): session.accept(r)
            case .subscribe(let s, let receipt):
                session.subscribe(s, receipt: receipt)
                for _ in 0..<3 {
                    _ = session.delivered(subscription: s.id, eventID: next)
                    next += 1
                }
                if options.maxUnacknowledged > 0 {
                    require(session.subscriptions[s.id]!.unacknowledged.count <= options.maxUnacknowledged, "over the cap")
                }
            case .send(_, _, let receipt): session.complete(receipt: receipt)
            default: break
            }
        }
        written += session.output
        session.output = []
        return session.state != .closed
    }
    return (events, written)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 1 else { return 0 }
    let c = data[0]
    var options = StompServerOptions()
    options.limits = StompLimits(maxHeaders: headerCounts[Int(c >> 2 & 3)], maxLineBytes: lines[Int(c >> 4 & 3)], maxBodyBytes: bodies[Int(c & 3)])
    options.maxUnacknowledged = c & 0x40 != 0 ? 2 : 0
    let chunks = Chunks(data + 1, size - 1)
    let (events, written) = run(chunks, options: options)
    let (whole, wholeWritten) = run(Chunks([0] + chunks.stream), options: options)
    require(events == whole, "the events depend on the split")
    require(written.joined().elementsEqual(wholeWritten.joined()), "the output depends on the split")

    // What the session wrote reads back; an ERROR, if any, is the last frame.
    var reader = StompParser()
    for case .connect(let r) in events { reader.version = r.version }  // the version it was written in
    for w in written { reader.append(w) }
    var frames: [StompFrame] = []
    while let f = try? reader.next() { frames.append(f) }
    require(reader.bufferedBytes == 0, "the session wrote something that is not a frame")
    if let i = frames.firstIndex(where: { $0.command == .error }) {
        require(i == frames.count - 1, "frames after an ERROR")
    }
    if case .failed = events.last { require(frames.last?.command == .error, "failed without an ERROR frame") }

    // The parser alone: limits kept, and each frame encodes back to itself.
    var parser = StompParser(limits: options.limits)
    parser.append(chunks.stream)
    while let f = try? parser.next() {
        require(f.headers.count <= options.limits.maxHeaders && f.body.count <= options.limits.maxBodyBytes, "a frame over the limits")
        var again = StompParser()
        again.append(f.encoded())
        guard let back = try? again.next() else {
            require(false, "an encoded \(f.command) does not read back")
            return 0
        }
        var expected = f
        if !f.body.isEmpty && f["content-length"] == nil { expected.headers.append(StompHeader("content-length", String(f.body.count))) }
        require(back == expected, "\(f.command) does not read back to itself")
    }
    return 0
}

@_cdecl("fuzz_stomp_main")
public func harnessMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzz)
}
