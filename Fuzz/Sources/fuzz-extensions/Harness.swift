// Sec-WebSocket-Extensions (RFC 6455 §9.1) and permessage-deflate negotiation (RFC 7692).
// Oracle: what parses formats back to itself; an agreement has window bits in 8...15 and a
// well-formed response.
import FuzzSupport
import PetrelCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let values = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    guard let offers = ExtensionOffer.parse(values) else { return 0 }
    let formatted = ExtensionOffer.format(offers)
    if !offers.isEmpty {
        require(ExtensionOffer.parse([formatted]) == offers, "format/parse round trip: \(formatted)")
    }
    for noContext in [false, true] {
        var options = DeflateOptions()
        options.localNoContextTakeover = noContext
        guard let (response, compression) = PerMessageDeflate.negotiate(offers: offers, options: options) else { continue }
        let p = compression.parameters
        require((8...15).contains(p.localMaxWindowBits) && (8...15).contains(p.remoteMaxWindowBits), "window bits \(p)")
        require(response.name == "permessage-deflate", "responded with \(response.name)")
        require(ExtensionOffer.parse([ExtensionOffer.format([response])]) == [response], "our response does not parse")
    }
    return 0
}

@_cdecl("fuzz_extensions_main")
public func harnessMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzz)
}
