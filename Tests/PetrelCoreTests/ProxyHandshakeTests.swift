import PetrelCore
import Testing

/// What a conversation with a proxy came to: what we wrote after `firstBytes`, how it ended (nil
/// while the handshake still wants bytes), and the bytes left over for the tunnel.
struct ProxyOutcome {
    var sent: [[UInt8]] = []
    var end: ProxyHandshake.Step?
    var tunnel: [UInt8] = []
}

/// Plays the proxy's `turns` (each what it sends after reading our previous message), every turn
/// fed in pieces of `step` bytes.
func converse(_ handshake: inout ProxyHandshake, _ turns: [[UInt8]], step: Int = .max) -> ProxyOutcome {
    var outcome = ProxyOutcome()
    for turn in turns {
        var at = 0
        while at < turn.count {
            let n = min(step, turn.count - at)
            let result = turn[at..<at + n].withUnsafeBytes { handshake.feed($0) }
            switch result {
            case .needMore(let send):
                if !send.isEmpty { outcome.sent.append(send) }
            case .established(let consumed):
                #expect(consumed >= 0 && consumed <= n)
                outcome.tunnel = Array(turn[(at + consumed)...])
                outcome.end = result
                return outcome
            case .failed:
                outcome.end = result
                return outcome
            }
            at += n
        }
    }
    return outcome
}

extension ProxyHandshake {
    /// Keeps the array alive for the call, and its literal typed as bytes.
    fileprivate mutating func feed(bytes: [UInt8]) -> Step { bytes.withUnsafeBytes { self.feed($0) } }
}

private let steps = [1, 2, 3, 7, .max]

private func socks(_ host: String = "example.com", port: UInt16 = 443, user: String? = nil, password: String? = nil) throws
    -> ProxyHandshake
{
    try ProxyHandshake(kind: .socks5, targetHost: host, targetPort: port, username: user, password: password)
}

private func connect(_ host: String = "example.com", port: UInt16 = 443, user: String? = nil, password: String? = nil,
                     maxHeaderBytes: Int = 16 * 1024, maxHeaderCount: Int = 100) throws -> ProxyHandshake {
    try ProxyHandshake(
        kind: .httpConnect, targetHost: host, targetPort: port, username: user, password: password,
        maxHeaderBytes: maxHeaderBytes, maxHeaderCount: maxHeaderCount)
}

/// The connect request for example.com:443 by name.
private let connectByName: [UInt8] = [5, 1, 0, 3, 11] + Array("example.com".utf8) + [1, 0xBB]
/// Replies whose bound address is IPv4, a name and IPv6 (RFC 1928 §6).
private let replyIPv4: [UInt8] = [5, 0, 0, 1, 10, 0, 0, 1, 0x1F, 0x90]
private let replyName: [UInt8] = [5, 0, 0, 3, 7] + Array("relay.x".utf8) + [0x1F, 0x90]
private let replyIPv6: [UInt8] = [5, 0, 0, 4] + [UInt8](repeating: 0, count: 15) + [1] + [0x1F, 0x90]

@Suite("Proxy tunnels: the client side, sans-I/O")
struct ProxyHandshakeTests {}

extension ProxyHandshakeTests {
    @Suite("RFC 1928 / RFC 1929 SOCKS5 client")
    struct SOCKS5 {
        @Test("the greeting offers username/password only with credentials")
        func greeting() throws {
            #expect(try socks().firstBytes == [5, 1, 0])
            #expect(try socks(user: "ada", password: "pw").firstBytes == [5, 2, 0, 2])
            #expect(try socks(user: "ada").firstBytes == [5, 2, 0, 2])
        }

        @Test("CONNECT by name, IPv4 or IPv6 address, port in network order", arguments: [
            ("example.com", [3, 11] + Array("example.com".utf8)),
            ("127.0.0.1", [1, 127, 0, 0, 1]),
            ("::1", [4] + [UInt8](repeating: 0, count: 15) + [1]),
            ("[::1]", [4] + [UInt8](repeating: 0, count: 15) + [1]),
            ("[10.1.2.3]", [1, 10, 1, 2, 3]),
            ("1.2.3", [3, 5] + Array("1.2.3".utf8)),
        ] as [(String, [UInt8])])
        func connectRequest(host: String, address: [UInt8]) throws {
            var h = try socks(host, port: 8080)
            let outcome = converse(&h, [[5, 0]])
            #expect(outcome.sent == [[5, 1, 0] + address + [0x1F, 0x90]])
            #expect(outcome.end == nil)
        }

        @Test("each reply address type establishes the tunnel, in every split, with tunnel bytes after",
              arguments: [replyIPv4, replyName, replyIPv6], steps)
        func established(reply: [UInt8], step: Int) throws {
            var h = try socks()
            let outcome = converse(&h, [[5, 0], reply + Array("tunnel".utf8)], step: step)
            #expect(outcome.sent == [connectByName])
            #expect(outcome.end == .established(consumed: lastPiece(reply.count, step)))
            #expect(outcome.tunnel == Array("tunnel".utf8))
            #expect(h.bufferedByteCount == 0)
        }

        @Test("the longest reply (a 255-byte name) is read exactly, and held no longer than its format")
        func longestReply() throws {
            var h = try socks()
            _ = converse(&h, [[5, 0]])
            let reply: [UInt8] = [5, 0, 0, 3, 255] + [UInt8](repeating: 0x61, count: 255) + [0, 80]
            #expect(reply.count == ProxyHandshake.maxSOCKSReplyBytes)
            for i in 0..<reply.count - 1 {
                #expect(h.feed(bytes: [reply[i]]) == .needMore(send: []))
                #expect(h.bufferedByteCount == i + 1)
            }
            #expect(h.feed(bytes: [reply.last!, 1, 2, 3]) == .established(consumed: 1))
        }

        @Test("username/password: accepted, then CONNECT", arguments: steps)
        func authenticationAccepted(step: Int) throws {
            var h = try socks(user: "ada", password: "pw")
            let outcome = converse(&h, [[5, 2], [1, 0], replyIPv4], step: step)
            #expect(outcome.sent == [[1, 3] + Array("ada".utf8) + [2] + Array("pw".utf8), connectByName])
            #expect(outcome.end == .established(consumed: lastPiece(replyIPv4.count, step)))
        }

        @Test("a nil password is sent as empty; a proxy that needs no authentication gets none")
        func credentialsNotAsked() throws {
            var h = try socks(user: "ada")
            #expect(converse(&h, [[5, 2]]).sent == [[1, 3] + Array("ada".utf8) + [0]])
            var open = try socks(user: "ada", password: "pw")
            let outcome = converse(&open, [[5, 0], replyIPv4])
            #expect(outcome.sent == [connectByName] && outcome.end == .established(consumed: replyIPv4.count))
        }

        @Test("username/password refused, or a malformed answer to it")
        func authenticationRefused() throws {
            var h = try socks(user: "ada", password: "wrong")
            let refused = converse(&h, [[5, 2], [1, 1]], step: 1)
            #expect(refused.end == .failed(.authenticationFailed(status: 1)))
            #expect(refused.end.map(message) == "SOCKS5 authentication failed (status 1)")
            var m = try socks(user: "ada", password: "pw")
            #expect(converse(&m, [[5, 2], [5, 0]]).end.map(message) == "malformed SOCKS5 authentication reply")
        }

        @Test("the proxy's method choice: credentials we lack, nothing acceptable, not SOCKS5 at all",
              arguments: [
                ([5, 2], "SOCKS5 proxy wants a user name and password"),
                ([5, 0xFF], "SOCKS5 proxy accepts none of our authentication methods"),
                ([5, 1], "SOCKS5 proxy accepts none of our authentication methods"),
                ([4, 0], "not a SOCKS5 server"),
                (Array("HTTP/1.1 400 Bad Request\r\n\r\n".utf8), "not a SOCKS5 server"),
              ] as [([UInt8], String)])
        func methodRefused(reply: [UInt8], text: String) throws {
            for step in steps {
                var h = try socks()
                let outcome = converse(&h, [reply], step: step)
                #expect(outcome.sent.isEmpty && outcome.end.map(message) == text)
            }
        }

        @Test("each RFC 1928 §6 refusal carries its reply code", arguments: UInt8(1)...UInt8(9))
        func connectRefused(code: UInt8) throws {
            var h = try socks()
            let outcome = converse(&h, [[5, 0], [5, code, 0, 1, 0, 0, 0, 0, 0, 0]], step: 3)
            guard case .failed(let e) = outcome.end else { Issue.record("not failed: \(String(describing: outcome.end))"); return }
            #expect(e.socksReply == code && e.httpStatus == nil)
            #expect(e.message == "SOCKS5 CONNECT refused: \(ProxyHandshake.socksReplyText(code)) (reply \(code))")
            #expect(e.matches(.socksRefused(reply: 0)))
            if code == 5 { #expect(e.message == "SOCKS5 CONNECT refused: connection refused (reply 5)") }
            if code == 9 { #expect(e.message == "SOCKS5 CONNECT refused: unknown reply (reply 9)") }
        }

        @Test("malformed connect replies: wrong version, unknown address type", arguments: [
            [4, 0, 0, 1, 0, 0, 0, 0, 0, 0],
            [5, 0, 0, 2, 0],
            [5, 0, 0, 0, 9, 9, 9],
        ] as [[UInt8]])
        func malformedReply(reply: [UInt8]) throws {
            for step in steps {
                var h = try socks()
                #expect(converse(&h, [[5, 0], reply], step: step).end == .failed(.malformedReply))
            }
        }

        @Test("a reply before our request was sent is refused, not carried into the next phase")
        func outOfTurn() throws {
            var h = try socks()
            #expect(converse(&h, [[5, 0] + replyIPv4]).end == .failed(.outOfTurn))
            var a = try socks(user: "ada", password: "pw")
            #expect(converse(&a, [[5, 2], [1, 0, 5]]).end.map(message) == "SOCKS5 proxy sent data before our request")
        }

        @Test("a failure sticks; nothing is held after it")
        func failureSticks() throws {
            var h = try socks()
            #expect(converse(&h, [[5, 0], [5, 1, 0]]).end == nil)
            #expect(h.bufferedByteCount == 3)
            #expect(h.feed(bytes: [1, 0, 0, 0, 0, 0, 0]) == .failed(.socksRefused(reply: 1)))
            #expect(h.bufferedByteCount == 0)
            #expect(h.feed(bytes: [5, 0]) == .failed(.socksRefused(reply: 1)))
            var bad = try socks()
            #expect(bad.feed(bytes: [4, 0]) == .failed(.notSOCKS5))
            #expect(bad.feed(bytes: [5, 0]) == .failed(.notSOCKS5))
            #expect(bad.bufferedByteCount == 0)
        }

        @Test("targets and credentials that cannot be sent fail at init, not later")
        func invalidTargets() throws {
            #expect(try socks(String(repeating: "a", count: 255)).firstBytes == [5, 1, 0])
            #expect(throws: ProxyHandshakeError.invalidTarget("a host name over 255 bytes cannot go through SOCKS5")) {
                try socks(String(repeating: "a", count: 256))
            }
            #expect(throws: ProxyHandshakeError.invalidTarget("SOCKS5 user names and passwords are at most 255 bytes")) {
                try socks(user: String(repeating: "u", count: 256), password: "p")
            }
            #expect(throws: ProxyHandshakeError.self) { try socks(user: "u", password: String(repeating: "p", count: 256)) }
            _ = try socks(user: String(repeating: "u", count: 255), password: String(repeating: "p", count: 255))
            for host in ["a\u{0}b", "evil\r\nX: 1", "a b", "tab\there", "\u{7F}"] {
                #expect(throws: ProxyHandshakeError.self, "\(host)") { try socks(host) }
                #expect(throws: ProxyHandshakeError.self, "\(host)") { try connect(host) }
            }
        }
    }
}

extension ProxyHandshakeTests {
    @Suite("RFC 9110 §9.3.6 HTTP CONNECT client")
    struct HTTPConnect {
        @Test("the request, byte for byte: authority, Host, Basic credentials, IPv6 brackets")
        func request() throws {
            #expect(String(decoding: try connect().firstBytes, as: UTF8.self)
                == "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
            #expect(String(decoding: try connect("::1", port: 8443).firstBytes, as: UTF8.self)
                == "CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n")
            #expect(String(decoding: try connect("h", port: 1, user: "ada", password: "s@cret").firstBytes, as: UTF8.self)
                == "CONNECT h:1 HTTP/1.1\r\nHost: h:1\r\nProxy-Authorization: Basic YWRhOnNAY3JldA==\r\n\r\n")
            // A user without a password: "ada:" (RFC 7617 §2).
            #expect(String(decoding: try connect("h", port: 1, user: "ada").firstBytes, as: UTF8.self).contains("Basic YWRhOg==\r\n"))
            // A host name over 255 bytes is fine here.
            _ = try connect(String(repeating: "a", count: 300))
        }

        @Test("200, in every split, with the tunnel's first bytes right after", arguments: steps)
        func established(step: Int) throws {
            let response = Array("HTTP/1.1 200 Connection established\r\n\r\n".utf8)
            var h = try connect()
            let outcome = converse(&h, [response + [0x81, 0x05]], step: step)
            guard case .established = outcome.end else { Issue.record("not established"); return }
            #expect(outcome.sent.isEmpty && outcome.tunnel == [0x81, 0x05])
            #expect(h.bufferedByteCount == 0)
        }

        @Test("any 2xx opens the tunnel; bare LF line ends are accepted; headers are skipped")
        func otherSuccess() throws {
            let successes = [
                "HTTP/1.0 200 OK\r\nProxy-Agent: x\r\n\r\n", "HTTP/1.1 204 \n\n", "HTTP/1.1 299 Whatever\r\nA: b\r\nC: d\r\n\r\n",
            ]
            for text in successes {
                var h = try connect()
                #expect(converse(&h, [Array(text.utf8)]).end == .established(consumed: text.utf8.count), "\(text)")
            }
        }

        @Test("a refusal carries the status and reason", arguments: [
            ("HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"p\"\r\nContent-Length: 0\r\n\r\n", 407,
             "CONNECT refused: 407 Proxy Authentication Required"),
            ("HTTP/1.1 403 Forbidden\r\n\r\n", 403, "CONNECT refused: 403 Forbidden"),
            ("HTTP/1.1 502 Bad Gateway\r\n\r\n<html>", 502, "CONNECT refused: 502 Bad Gateway"),
            ("HTTP/1.1 101 Switching Protocols\r\n\r\n", 101, "CONNECT refused: 101 Switching Protocols"),
            ("HTTP/1.1 300\r\n\r\n", 300, "CONNECT refused: 300 "),
        ] as [(String, Int, String)])
        func refused(text: String, status: Int, message: String) throws {
            for step in steps {
                var h = try connect()
                let outcome = converse(&h, [Array(text.utf8)], step: step)
                guard case .failed(let e) = outcome.end else { Issue.record("not failed"); return }
                #expect(e.httpStatus == status && e.socksReply == nil && e.message == message)
                #expect(e.matches(.connectRefused(status: 0, reason: "")))
            }
        }

        @Test("a response that is not HTTP fails with the parser's reason", arguments: [
            ("SSH-2.0-OpenSSH_9.6\r\n\r\n", "malformed handshake response: malformed status line"),
            ("HTTP/2 200\r\n\r\n", "malformed handshake response: malformed status line"),
            ("HTTP/1.1 2000 OK\r\n\r\n", "malformed handshake response: malformed status line"),
            ("HTTP/1.1 200 OK\r\n folded\r\n\r\n", "malformed handshake response: obsolete header line folding"),
            ("HTTP/1.1 200 OK\r\nNo colon\r\n\r\n", "malformed handshake response: header line without a colon"),
            ("\r\n\r\n", "malformed handshake response: empty request"),
        ] as [(String, String)])
        func malformed(text: String, message: String) throws {
            var h = try connect()
            let outcome = converse(&h, [Array(text.utf8)], step: 2)
            guard case .failed(let e) = outcome.end else { Issue.record("not failed: \(text)"); return }
            #expect(e.message == message && e.httpStatus == nil && e.matches(.malformedResponse("")))
        }

        @Test("the response head is bounded by maxHeaderBytes and maxHeaderCount")
        func limits() throws {
            var h = try connect(maxHeaderBytes: 64)
            let big = Array("HTTP/1.1 200 OK\r\nX-Padding: \(String(repeating: "p", count: 100))\r\n\r\n".utf8)
            var last: ProxyHandshake.Step = .needMore(send: [])
            for b in big {
                last = h.feed(bytes: [b])
                #expect(h.bufferedByteCount <= 65)
                if case .failed = last { break }
            }
            #expect(last == .failed(.responseTooLarge) && last != .needMore(send: []))
            #expect(String(describing: ProxyHandshakeError.responseTooLarge) == "response head too large")
            var all = try connect(maxHeaderBytes: 64)
            #expect(all.feed(bytes: big) == .failed(.responseTooLarge))

            var many = try connect(maxHeaderCount: 2)
            let three = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
            #expect(converse(&many, [Array(three.utf8)]).end.map(message) == "malformed handshake response: more than 2 header fields")
            var two = try connect(maxHeaderCount: 2)
            #expect(converse(&two, [Array("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n".utf8)]).end != nil)
        }

        @Test("after a failure every feed returns it again")
        func failureSticks() throws {
            var h = try connect()
            let first = h.feed(bytes: Array("HTTP/1.1 407 No\r\n\r\n".utf8))
            #expect(first == .failed(.connectRefused(status: 407, reason: "No")))
            #expect(h.feed(bytes: Array("HTTP/1.1 200 OK\r\n\r\n".utf8)) == first)
        }
    }
}

/// How many bytes of the piece that holds a message's last byte are the message's, when a stream
/// starting with `length` message bytes is fed in pieces of `step`.
private func lastPiece(_ length: Int, _ step: Int) -> Int { length - ((length - 1) / step) * step }

private func message(_ step: ProxyHandshake.Step) -> String? {
    if case .failed(let e) = step { return e.message }
    return nil
}
