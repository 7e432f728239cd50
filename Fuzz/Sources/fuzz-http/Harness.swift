// The runtime's text parsers: plain HTTP requests and their query parameters, percent-decoding,
// ws:// and proxy URLs, and Server-Sent Events framing. Oracle: decoding never yields invalid
// UTF-8; an SSE event has exactly one blank line, at its end (no payload can split it); parsed
// URLs have a host and the scheme's port rules.
import FuzzSupport
import PetrelCore
import PetrelRuntime

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    if case .success(let head) = HTTPRequestHead.parse(Array(bytes) + [13, 10, 13, 10], maxFieldCount: 32) {
        for name in ["a", "client", "last_event_id", ""] {
            if let v = head.queryParameter(name) { require(v.utf8.count <= size, "decoded longer than the input") }
        }
        if let p = URLEncoding.decode(head.path.utf8) {
            var v = UTF8Validator()
            require(Array(p.utf8).withUnsafeBytes { v.validate($0) } == nil, "decoded path not UTF-8")
        }
    }
    let event = ServerSentEvents.event(id: UInt64(size), payload: UnsafeRawBufferPointer(bytes))
    let text = event.withUnsafeBufferPointer { Array($0) }
    var blank = 0
    for i in 1..<text.count where text[i] == 0x0A && text[i - 1] == 0x0A { blank += 1 }
    require(blank == 1 && text.suffix(2) == [0x0A, 0x0A], "an SSE event split by its payload")
    require(!text.contains(0x0D), "a CR in an SSE event")
    let string = String(decoding: bytes, as: UTF8.self)
    if let url = try? WebSocketURL(string) {
        require(!url.host.isEmpty && url.target.hasPrefix("/"), "URL without host or path: \(url)")
    }
    if let proxy = try? ProxyURL(string) {
        require(!proxy.host.isEmpty, "proxy without host")
    }
    return 0
}

@_cdecl("fuzz_http_main")
public func harnessMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzz)
}
