import PetrelCore

/// Feeds a frame stream to a session of `role` in the pieces `Chunks` chooses, checking every
/// event against the limits (32 KiB frames, 64 KiB messages). With the server role the second
/// input byte may agree permessage-deflate (its bits choose the parameters).
public func runFrames(_ data: UnsafePointer<UInt8>, _ size: Int, role: Role) -> Int32 {
    let limits = SessionConfiguration(maxFrameSize: 32 * 1024, maxMessageSize: 64 * 1024)
    let compression: Compression? = role == .server && size > 1 && data[1] & 1 == 1
        ? Compression(parameters: DeflateParameters(localNoContextTakeover: data[1] & 2 != 0, remoteNoContextTakeover: data[1] & 4 != 0,
                                                    localMaxWindowBits: 15, remoteMaxWindowBits: 8 + Int(data[1] >> 5)))
        : nil
    var session = Session(role: role, configuration: limits, compression: compression, entropy: .seeded(1))
    let chunks = Chunks(data, size)
    var failed = false
    var delivered = 0
    chunks.forEach { piece in
        piece.withUnsafeMutableBytes { buffer in
            var offset = 0
            while offset < buffer.count && !failed {
                let (used, event) = session.parse(UnsafeMutableRawBufferPointer(rebasing: buffer[offset...]))
                require(used > 0 || event != nil, "no progress")
                offset += used
                switch event {
                case .text(let p)?:
                    require(p.count <= 64 * 1024 && UTF8Validator.isValid(p), "text over the limit or not UTF-8")
                    delivered += p.count
                case .binary(let p)?:
                    require(p.count <= 64 * 1024, "binary over the limit")
                    delivered += p.count
                case .ping(let p)?, .pong(let p)?:
                    require(p.count <= 125, "control payload over 125")
                case .close(_, let reason)?:
                    require(reason.count <= 123 && UTF8Validator.isValid(reason), "bad close reason")
                case .failed(let e)?:
                    let code = e.closeCode.rawValue
                    require(code == 1002 || code == 1007 || code == 1009, "failure with close code \(code)")
                    failed = true
                case nil:
                    break
                }
            }
        }
        // Answers (pongs, the close echo) never outgrow the input by more than masking does: a
        // server's answer is smaller than the masked frame it answers; a client's pong to an
        // empty unmasked ping is 6 bytes for 2 (header, mask key), so 3 to 1 at most.
        let factor = role == .client ? 3 : 2
        require(session.pendingOutputCount <= factor * chunks.stream.count + 512, "output grows faster than input")
        _ = session.takeOutput()
        return !failed
    }
    _ = delivered
    return 0
}
