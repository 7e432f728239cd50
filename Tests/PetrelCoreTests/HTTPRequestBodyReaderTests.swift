import PetrelCore
import Testing

extension HTTPRequestBodyReader {
    /// Keeps the array alive for the call, and its literal typed as bytes.
    fileprivate mutating func feed(bytes: [UInt8]) -> Progress { bytes.withUnsafeBytes { self.feed($0) } }
}

private func head(_ fields: [(String, String)]) -> HTTPRequestHead {
    HTTPRequestHead(method: "POST", target: "/submit", headers: HTTPHeaders(fields.map { HTTPField(name: $0.0, value: $0.1) }))
}

private func start(_ fields: [(String, String)], max: Int = 1024) -> Result<HTTPRequestBodyReader, HTTPRequestBodyError> {
    HTTPRequestBodyReader.start(head: head(fields), maxBodyBytes: max)
}

/// Feeds `stream` in pieces of `step`; returns the body once complete and the bytes after it.
private func read(_ reader: inout HTTPRequestBodyReader, _ stream: [UInt8], step: Int) -> (body: [UInt8], rest: [UInt8])? {
    var at = 0
    while at < stream.count {
        let n = min(step, stream.count - at)
        switch stream[at..<at + n].withUnsafeBytes({ reader.feed($0) }) {
        case .needMore:
            #expect(!reader.isComplete)
            at += n
        case .complete(let consumed):
            #expect(consumed <= n && reader.isComplete)
            return (reader.body, Array(stream[(at + consumed)...]))
        }
    }
    return nil
}

@Suite("RFC 9112 §6 request bodies by Content-Length")
struct HTTPRequestBodyReaderTests {
    @Test("a body in every split, with the next request's bytes after it", arguments: [1, 2, 3, 5, 11, .max])
    func splits(step: Int) throws {
        var reader = try start([("Host", "h"), ("Content-Length", "11")]).get()
        #expect(reader.length == 11 && !reader.isComplete)
        let got = read(&reader, Array("hello worldGET / HTTP/1.1".utf8), step: step)
        #expect(got?.body == Array("hello world".utf8))
        #expect(got?.rest == Array("GET / HTTP/1.1".utf8))
    }

    @Test("no Content-Length, or 0: no body, complete at once, nothing consumed")
    func empty() throws {
        for fields in [[], [("Content-Length", "0")], [("content-length", "000")]] as [[(String, String)]] {
            var reader = try start(fields).get()
            #expect(reader.length == 0 && reader.isComplete)
            #expect(reader.feed(bytes: []) == .complete(consumed: 0))
            #expect(reader.feed(bytes: Array("next".utf8)) == .complete(consumed: 0))
            #expect(reader.body.isEmpty)
        }
    }

    @Test("once complete, later bytes are not taken")
    func afterComplete() throws {
        var reader = try start([("Content-Length", "2")]).get()
        #expect(reader.feed(bytes: [1]) == .needMore)
        #expect(reader.feed(bytes: []) == .needMore)
        #expect(reader.feed(bytes: [2, 3]) == .complete(consumed: 1))
        #expect(reader.feed(bytes: [4]) == .complete(consumed: 0))
        #expect(reader.body == [1, 2])
    }

    @Test("Content-Length: digits only, at most 18, every copy the same", arguments: [
        ([("Content-Length", "5"), ("Content-Length", "5")], 5),
        ([("Content-Length", "000000000000000007")], 7),
        ([("CONTENT-LENGTH", "3")], 3),
        ([("Content-Length", "1024")], 1024),
    ] as [([(String, String)], Int)])
    func goodLengths(fields: [(String, String)], length: Int) throws {
        #expect(try start(fields).get().length == length)
    }

    @Test("bad Content-Length is 400", arguments: [
        [("Content-Length", "5"), ("Content-Length", "6")],
        [("Content-Length", "5"), ("Content-Length", "05")],
        [("Content-Length", "")],
        [("Content-Length", "5"), ("Content-Length", "")],
        [("Content-Length", "+5")],
        [("Content-Length", "-1")],
        [("Content-Length", "0x10")],
        [("Content-Length", "5, 5")],
        [("Content-Length", "5 5")],
        [("Content-Length", "٣")],
        [("Content-Length", "0000000000000000005")],
        [("Content-Length", "99999999999999999999999")],
    ] as [[(String, String)]])
    func badLengths(fields: [(String, String)]) {
        #expect(throws: HTTPRequestBodyError.badContentLength) { try start(fields).get() }
    }

    @Test("any Transfer-Encoding is 411, even beside a Content-Length", arguments: [
        [("Transfer-Encoding", "chunked")],
        [("transfer-encoding", "identity")],
        [("Transfer-Encoding", "")],
        [("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
        [("Transfer-Encoding", "chunked"), ("Content-Length", "bad")],
    ] as [[(String, String)]])
    func transferEncoding(fields: [(String, String)]) {
        #expect(throws: HTTPRequestBodyError.lengthRequired) { try start(fields).get() }
    }

    @Test("over maxBodyBytes is 413, checked before any byte is read")
    func tooLarge() throws {
        #expect(try start([("Content-Length", "10")], max: 10).get().length == 10)
        #expect(throws: HTTPRequestBodyError.tooLarge(limit: 10)) { try start([("Content-Length", "11")], max: 10).get() }
        #expect(throws: HTTPRequestBodyError.tooLarge(limit: 1024)) { try start([("Content-Length", "999999999999999999")]).get() }
        #expect(throws: HTTPRequestBodyError.tooLarge(limit: 0)) { try start([("Content-Length", "1")], max: 0).get() }
    }

    @Test("each refusal: its status, text and response")
    func responses() {
        let table: [(HTTPRequestBodyError, Int, String, String)] = [
            (.lengthRequired, 411, "a request body needs Content-Length", "HTTP/1.1 411 Length Required\r\n"),
            (.badContentLength, 400, "bad Content-Length", "HTTP/1.1 400 Bad Request\r\n"),
            (.tooLarge(limit: 10), 413, "request body over 10 bytes", "HTTP/1.1 413 Content Too Large\r\n"),
        ]
        for (error, status, message, statusLine) in table {
            #expect(error.httpStatus == status && error.message == message)
            #expect(error.description == "\(status): \(message)")
            let response = String(decoding: error.response, as: UTF8.self)
            #expect(response.hasPrefix(statusLine) && response.hasSuffix("\r\n\r\n\(message)\n"))
            #expect(error.response == HTTPResponse.error(status: status, body: message))
        }
    }
}
