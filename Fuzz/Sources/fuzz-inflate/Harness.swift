// The inflater behind permessage-deflate, with its size limit: the input is the compressed
// payload of one message (sent twice, so a kept window is used again), its first byte the
// window size, context takeover and text or binary. Oracle: a message inflates to at most the
// limit (64 KiB), else 1009; bad data is 1002 (1007 for text that is not UTF-8); never more.
import FuzzSupport
import PetrelCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let selector = data[0]
    let payload = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    let parameters = DeflateParameters(
        localNoContextTakeover: true, remoteNoContextTakeover: selector & 1 != 0, localMaxWindowBits: 15,
        remoteMaxWindowBits: 8 + Int((selector >> 1) & 7))
    var session = Session(
        role: .server, configuration: SessionConfiguration(maxFrameSize: 1 << 20, maxMessageSize: 64 * 1024),
        compression: Compression(parameters: parameters), entropy: .seeded(1))
    let text = selector & 16 != 0
    var frame: [UInt8] = [0xC0 | (text ? 1 : 2)]
    let n = payload.count
    if n < 126 {
        frame.append(0x80 | UInt8(n))
    } else if n <= 0xFFFF {
        frame += [0x80 | 126, UInt8(n >> 8), UInt8(n & 0xFF)]
    } else {
        frame += [0x80 | 127, 0, 0, 0, 0, UInt8(n >> 24 & 0xFF), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)]
    }
    frame += [0, 0, 0, 0] + payload  // a zero mask key leaves the payload as it is
    var stream = frame + frame
    stream.withUnsafeMutableBytes { buffer in
        var offset = 0
        while offset < buffer.count {
            let (used, event) = session.parse(UnsafeMutableRawBufferPointer(rebasing: buffer[offset...]))
            require(used > 0 || event != nil, "no progress")
            offset += used
            switch event {
            case .binary(let p)?: require(!text && p.count <= 64 * 1024, "binary over the limit")
            case .text(let p)?: require(text && p.count <= 64 * 1024 && UTF8Validator.isValid(p), "bad text")
            case .failed(let e)?:
                let code = e.closeCode.rawValue
                require(code == 1002 || code == 1009 || (text && code == 1007), "failure with close code \(code)")
                return
            default: break
            }
        }
    }
    return 0
}

@_cdecl("fuzz_inflate_main")
public func harnessMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzz)
}
