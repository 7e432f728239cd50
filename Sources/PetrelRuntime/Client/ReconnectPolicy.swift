import PetrelCore

/// When a client that lost its connection connects again, and how long it waits first: the one
/// policy behind the C, Python and Swift reconnecting clients (docs/runtime.md, Reconnecting).
///
/// The wait before attempt `n` (1 is the first after a loss) is `initialDelay · 2^(n−1)`, at
/// most `maxDelay`, less a random part of up to `jitter` of it, so that clients dropped together
/// do not come back together. Attempts count from the last time a connection opened.
public struct ReconnectPolicy: Sendable, Hashable {
    public var initialDelay: Milliseconds = 250
    public var maxDelay: Milliseconds = 30_000
    /// The share of each wait taken off at random, 0 to 1.
    public var jitter = 0.5
    /// Failed attempts in a row after which the client gives up (0: never).
    public var maxAttempts = 0

    public init(initialDelay: Milliseconds = 250, maxDelay: Milliseconds = 30_000, jitter: Double = 0.5, maxAttempts: Int = 0) {
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
        self.jitter = jitter
        self.maxAttempts = maxAttempts
    }

    /// Why the policy cannot be used, or nil.
    public var problem: String? {
        // 0 would stay 0 however often it doubled: a client refused at once would spin.
        if self.initialDelay < 1 || self.initialDelay > 3_600_000 { return "reconnect initial delay must be 1 to 3,600,000 ms" }
        if self.maxDelay < self.initialDelay || self.maxDelay > 3_600_000 {
            return "reconnect maximum delay must be at least the initial delay and at most 3,600,000 ms"
        }
        if !(self.jitter >= 0 && self.jitter <= 1) { return "reconnect jitter must be between 0 and 1" }
        if self.maxAttempts < 0 { return "reconnect attempts must not be negative" }
        return nil
    }

    /// The wait before attempt `attempt` (1, 2, ...), with `random` in 0..<1 choosing the jitter.
    public func delay(attempt: Int, random: Double) -> Milliseconds {
        var d = max(self.initialDelay, 1)
        var n = 1
        while n < attempt && d < self.maxDelay {
            d = d > self.maxDelay / 2 ? self.maxDelay : d * 2
            n += 1
        }
        d = min(d, self.maxDelay)
        return d - Int(Double(d) * self.jitter * min(max(random, 0), 1))
    }

    /// Whether attempt `attempt` may be made (the failed ones before it did not reach the limit).
    public func allows(attempt: Int) -> Bool { self.maxAttempts == 0 || attempt <= self.maxAttempts }

    /// Whether a connection that ended with `code` is tried again: the transport was lost or a
    /// pong did not come (1006; 1011 when we failed it for the missed pong), the server went away
    /// or restarts (1001, 1012), is overloaded (1013), failed (1011) or is a gateway that lost
    /// its upstream (1014). A close the peer meant (1000, or a verdict on what we sent: 1002,
    /// 1003, 1007, 1008, 1009, 1010, an application's 3000-4999) ends it.
    public static func reconnects(after code: CloseCode) -> Bool {
        switch code.rawValue {
        case 1001, 1006, 1011, 1012, 1013, 1014: return true
        default: return false
        }
    }

    /// Whether a failed attempt is tried again: what the network or a busy server does (no
    /// route, refused, reset, a timeout, a name that did not resolve, out of sockets, an HTTP
    /// 408, 429 or 5xx answer, a handshake cut short). A refusal that will not change by itself
    /// ends it: another 4xx status, a bad or foreign certificate, a proxy's refusal, a bad URL or
    /// option.
    public static func retries(_ error: RuntimeError) -> Bool {
        switch error.kind {
        case .connect, .connectTimeout, .resolve, .socket, .closed:
            return true
        case .handshake:
            let s = error.httpStatus
            return s == 0 || s == 408 || s == 429 || s >= 500
        case .tls, .proxy, .invalidURL, .configuration, .thread, .bind, .listen, .stopped, .engine:
            return false
        }
    }

    /// The URL (or request target) to resume from `lastEventID`: `url` with its `last_event_id` query
    /// parameter set (added, or replacing the one there), as Petrel's servers and petrel.js read
    /// it; the same id goes in a `Last-Event-ID` header.
    public static func resumeTarget(_ url: String, lastEventID: UInt64) -> String {
        var url = Substring(url)
        if let hash = url.firstIndex(of: "#") { url = url[..<hash] }  // a fragment is never sent
        var path = url
        var query: Substring = ""
        if let q = url.firstIndex(of: "?") {
            path = url[..<q]
            query = url[url.index(after: q)...]
        }
        var parts = query.split(separator: "&").filter { !($0 == "last_event_id" || $0.hasPrefix("last_event_id=")) }
        parts.append(Substring("last_event_id=\(lastEventID)"))
        return path + "?" + parts.joined(separator: "&")
    }
}
