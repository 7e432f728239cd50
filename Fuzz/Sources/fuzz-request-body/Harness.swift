// A plain HTTP request's body by Content-Length (RFC 9112 §6). Input: a configuration byte
// (bits 0-1: maxBodyBytes 0, 16, 1024 or 65536), the Chunks selector, then header lines
// ("Name: value", LF-separated) up to a NUL byte, and after it the bytes that follow the head.
// Oracle: the refusal is the one the rules give (a reference written apart from the reader) with
// its documented status and response; the body is exactly the first `length` bytes of the stream,
// complete exactly when they have all arrived, never longer than `length` (so never over the limit).
import FuzzSupport
import PetrelCore

let maxima = [0, 16, 1024, 65536]

/// The rules, restated: any Transfer-Encoding 411; Content-Length values must agree and be 1 to
/// 18 ASCII digits, else 400; over the limit 413.
func reference(_ fields: [HTTPField], max: Int) -> Result<Int, HTTPRequestBodyError> {
    func named(_ field: HTTPField, _ name: String) -> Bool {
        field.name.utf8.count == name.utf8.count && zip(field.name.utf8, name.utf8).allSatisfy { a, b in
            (a >= 0x41 && a <= 0x5A ? a + 0x20 : a) == b
        }
    }
    if fields.contains(where: { named($0, "transfer-encoding") }) { return .failure(.lengthRequired) }
    let values = fields.filter { named($0, "content-length") }.map { Array($0.value.utf8) }
    guard let first = values.first else { return .success(0) }
    var n = 0
    for v in values {
        guard v == first else { return .failure(.badContentLength) }
    }
    guard (1...18).contains(first.count) else { return .failure(.badContentLength) }
    for d in first {
        guard d >= 0x30 && d <= 0x39 else { return .failure(.badContentLength) }
        n = n * 10 + Int(d - 0x30)
    }
    return n > max ? .failure(.tooLarge(limit: max)) : .success(n)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 1 else { return 0 }
    let maxBodyBytes = maxima[Int(data[0] & 3)]
    let selector = data[1]
    let rest = UnsafeBufferPointer(start: data + 2, count: size - 2)
    let nul = rest.firstIndex(of: 0) ?? rest.count
    var fields: [HTTPField] = []
    for line in rest[..<nul].split(separator: 0x0A) {
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }
        var value = line[line.index(after: colon)...]
        while value.first == 0x20 { value = value.dropFirst() }
        fields.append(HTTPField(name: String(decoding: line[..<colon], as: UTF8.self), value: String(decoding: value, as: UTF8.self)))
    }
    let head = HTTPRequestHead(method: "POST", target: "/", headers: HTTPHeaders(fields))
    let expected = reference(fields, max: maxBodyBytes)
    switch HTTPRequestBodyReader.start(head: head, maxBodyBytes: maxBodyBytes) {
    case .failure(let e):
        guard case .failure(let want) = expected else {
            require(false, "refused with \(e), the rules accept")
            return 0
        }
        require(e == want, "refused with \(e), the rules say \(want)")
        require([400, 411, 413].contains(e.httpStatus) && !e.message.isEmpty, "undocumented refusal \(e)")
        require(e.response == HTTPResponse.error(status: e.httpStatus, body: e.message), "the response is not the refusal's")
    case .success(var reader):
        require(expected == .success(reader.length), "length \(reader.length), the rules say \(expected)")
        require(reader.length >= 0 && reader.length <= maxBodyBytes, "length \(reader.length) over \(maxBodyBytes)")
        let after = nul < rest.count ? Array(rest[(nul + 1)...]) : []
        let chunks = Chunks([selector] + after)
        var offset = 0
        var completeAt: Int? = reader.isComplete ? 0 : nil
        chunks.forEach { piece in
            let progress = piece.withUnsafeBytes { reader.feed($0) }
            require(reader.body.count <= reader.length, "body \(reader.body.count) over \(reader.length)")
            switch progress {
            case .needMore:
                require(completeAt == nil && !reader.isComplete, "needMore after the body was complete")
                offset += piece.count
            case .complete(let consumed):
                require(consumed >= 0 && consumed <= piece.count && reader.isComplete, "consumed \(consumed) of \(piece.count)")
                if let at = completeAt {
                    require(consumed == 0, "took \(consumed) more bytes after the body at \(at)")
                } else {
                    require(consumed > 0, "completed on nothing")
                    completeAt = offset + consumed
                }
                offset += piece.count
            }
            return true
        }
        let stream = chunks.stream
        if stream.count >= reader.length {
            require(completeAt == reader.length, "complete at \(String(describing: completeAt)), the body is \(reader.length) bytes")
            require(reader.body == Array(stream[..<reader.length]), "the body is not the stream's first \(reader.length) bytes")
        } else {
            require(completeAt == nil && reader.body == stream, "complete before the body arrived, or the body is not the stream")
        }
    }
    return 0
}

@_cdecl("fuzz_request_body_main")
public func harnessMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzz)
}
