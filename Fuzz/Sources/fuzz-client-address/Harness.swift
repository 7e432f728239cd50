// Where a connection came from: the PROXY protocol header (versions 1 and 2) and the Forwarded /
// X-Forwarded-For hops (Sources/PetrelCore/HTTP/ClientAddress.swift). Input: the bytes a
// balancer or client sends; the same bytes also read as a Forwarded and an X-Forwarded-For value.
// Oracles: a header is never longer than the bytes, nor than its version's limit; every cut of
// the input shorter than a header reads as needMore (or, for version 1, the same refusal), never
// as another header; the bytes after a header do not change it; hops are at most maxHops, and
// each is an address (a valid dotted quad, or IPv6 text).
import FuzzSupport
import PetrelCore

func parse(_ bytes: [UInt8]) -> ProxyProtocol.Outcome { bytes.withUnsafeBytes { ProxyProtocol.parse($0) } }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let whole = parse(bytes)
    if case .header(let source, let length) = whole {
        require(length <= bytes.count, "a header longer than the input")
        require(length <= 16 + ProxyProtocol.maxV2Block, "a header over the limit")
        if bytes.first == UInt8(ascii: "P") { require(length <= ProxyProtocol.maxV1Length, "a v1 header over 107 bytes") }
        for cut in stride(from: 0, to: length, by: max(1, length / 16)) {
            let outcome = parse(Array(bytes[..<cut]))
            if case .header = outcome { require(false, "a cut at \(cut) of a \(length)-byte header read as a header") }
        }
        require(parse(Array(bytes[..<length])) == whole, "the bytes after a header changed it")
        if case .text(let host, _)? = source {
            require(ProxyProtocol.ipv4(host) != nil || host.utf8.contains(UInt8(ascii: ":")), "a v1 address that is neither")
        }
    }
    let text = String(decoding: bytes, as: UTF8.self)
    for hops in [ForwardedFor.hops(forwarded: [text], xForwardedFor: []), ForwardedFor.hops(forwarded: [], xForwardedFor: [text, text])] {
        guard let hops else { continue }
        require(hops.count <= ForwardedFor.maxHops, "more hops than maxHops")
        for case let node? in hops {
            require(ProxyProtocol.ipv4(node.host) != nil || node.host.utf8.contains(UInt8(ascii: ":")), "a hop that is not an address: \(node.host)")
        }
    }
    return 0
}

@_cdecl("fuzz_client_address_main")
public func harnessMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzz)
}
