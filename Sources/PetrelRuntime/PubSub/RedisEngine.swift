import Glibc
import PetrelCore
import Synchronization

/// Topics shared through Redis Streams (ARCHITECTURE.md, "Scale: engines behind pub/sub").
///
/// Per topic, three keys with the topic as hash tag (one Redis Cluster slot):
/// `petrel:{topic}:e` the epoch, `petrel:{topic}:n` the sequence, `petrel:{topic}:s` the stream,
/// plus `petrel:{topic}:p:<node>`, the last publish of each node (see `publish`).
///
/// - A publish is one script run by Redis: the epoch (drawn when the topic has none, which
///   clears the old history with it), the next sequence, then `XADD` with the id
///   `<epoch>-<sequence>` and `MAXLEN ~` the topic's stream capacity. It returns the id; the
///   message reaches subscribers, on this node as on every other, when the reader reads it back.
/// - One reader thread per server reads every topic used on this node with a blocking
///   `XREAD` from the last id it has, and hands each entry to the topic registry, which keeps
///   the ring and fans out to the loops.
/// - A topic is "tracked" the first time this node publishes or subscribes to it: its ring is
///   filled from the stream's tail (`XREVRANGE`), and reading starts after that tail.
/// - Resuming from an id older than the ring reads the rest with `XRANGE`.
/// - A lost link is reconnected with backoff; reading goes on from the last id read, so nothing
///   is skipped or read twice. If a topic's epoch changed meanwhile (Redis lost its history),
///   or entries were trimmed before this node read them, the topic's subscribers here are
///   closed with 1012: when they resume, their id is too old and they take a snapshot.
final class RedisEngine: @unchecked Sendable {
    let address: RedisAddress
    private unowned let server: Server
    private var registry: TopicRegistry { self.server.topics }
    /// Publishes and queries (fill, `XRANGE`): one at a time.
    private let queries: Lock<RedisLink>
    /// Reader thread only.
    private let reader: RedisLink
    /// Topics read by the reader thread, with the last stream id read; and topics whose first
    /// fill failed (Redis was unreachable), which the reader thread tries again.
    /// And, for a topic whose history was lost, the epoch whose ids are now too old, until the
    /// topic has been filled again.
    private let topics = Lock<(reading: [String: String], pending: Set<String>, lost: [String: UInt64])>(([:], [], [:]))
    private let stopping = Atomic<Bool>(false)
    private var thread: pthread_t?
    /// Identifies this server's publishes, so that a publish retried after a lost reply is not
    /// added twice.
    private let node: String
    private let publishCount = Atomic<UInt64>(0)
    private var scriptSHA = ""
    /// The epoch each topic's last publish from here returned (under `queries`).
    private var publishedEpochs: [String: UInt64] = [:]
    /// How long the blocking read waits before it looks at new topics and epochs again.
    static let blockMilliseconds = 100
    static let readBatch = 1000
    /// How often the reader compares every topic's epoch with Redis's, besides on every new link.
    static let epochCheckMilliseconds: UInt64 = 1_000

    init(address: RedisAddress, server: Server, timeout: Milliseconds) {
        self.address = address
        self.server = server
        self.queries = Lock(RedisLink(address, timeout: timeout))
        self.reader = RedisLink(address, timeout: timeout)
        var random = SystemRandomNumberGenerator()
        self.node = String(random.next() as UInt64, radix: 16)
    }

    static func key(_ topic: String, _ suffix: String) -> [UInt8] { Array("petrel:{\(topic)}:\(suffix)".utf8) }

    /// Connects and loads the publish script: `Server.start` fails here if Redis cannot be reached.
    func connect() throws(RuntimeError) {
        try self.queries.withLock { (link: inout RedisLink) throws(RuntimeError) in
            try self.loadScript(link)
        }
    }

    /// Starts the reader thread, once the server's loops exist.
    func startReading() throws(RuntimeError) {
        self.thread = try spawnThread(name: "petrel-engine") { [self] in self.readLoop() }
    }

    /// Whether the caller is the reader thread (observers run there).
    var isReaderThread: Bool { self.thread.map { pthread_equal($0, pthread_self()) != 0 } ?? false }

    /// Set when an observer stopped the server from the reader thread (that thread only).
    private var stoppedFromReader = false

    func stop() {
        self.stopping.store(true, ordering: .releasing)
        if let t = self.thread, pthread_equal(t, pthread_self()) != 0 {
            // An observer stops the server, on this reader thread: the thread ends once the
            // observer returns, and closes the links itself (`readLoop`).
            self.stoppedFromReader = true
            pthread_detach(t)
            self.thread = nil
            return
        }
        if let t = self.thread { pthread_join(t, nil) }
        self.thread = nil
        self.queries.withLock { $0.disconnect() }
        self.reader.disconnect()
    }

    private func loadScript(_ link: RedisLink) throws(RuntimeError) {
        let reply = try link.command("SCRIPT", "LOAD", Self.publishScript)
        guard let sha = reply.text else { throw RuntimeError(.engine, "Redis at \(self.address): SCRIPT LOAD answered \(reply)") }
        self.scriptSHA = sha
    }

    // MARK: Publishing

    /// KEYS: epoch, sequence, stream, this node's last publish. ARGV: a new epoch (used only
    /// when the topic has none), the stream capacity, the kind (t or b), the coalescing key
    /// ("" for none, else "=" and the key), the payload, this publish's token, and "1" to write
    /// the id over the payload's first `{{id}}` (`IDStamp`; ids stay under 2^53, which Lua's
    /// numbers hold exactly).
    static let publishScript = """
        local epoch = redis.call('GET', KEYS[1])
        if epoch and redis.call('EXISTS', KEYS[2]) == 0 and redis.call('EXISTS', KEYS[3]) == 1 then
          epoch = false  -- the sequence is gone but not the stream: a history cut short
        end
        if not epoch then
          epoch = ARGV[1]
          redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
          redis.call('SET', KEYS[1], epoch)
        end
        local last = redis.call('GET', KEYS[4])
        if last then
          local token, e, s = string.match(last, '^(%S+) (%d+) (%d+)$')
          if token == ARGV[6] and e == epoch then return {tonumber(e), tonumber(s)} end
          if e == epoch and tonumber(ARGV[6]) < tonumber(token) then
            return redis.error_reply('ERR petrel: a publish older than the last one of this node arrived late')
          end
        end
        local seq = redis.call('INCR', KEYS[2])
        if seq >= 1099511627776 then return redis.error_reply('ERR petrel: the topic has used every sequence of its epoch') end
        local payload = ARGV[5]
        if ARGV[7] == '1' then
          local at = string.find(payload, '{{id}}', 1, true)
          if at then
            local id = string.format('%.0f', tonumber(epoch) * 1099511627776 + seq)
            payload = string.sub(payload, 1, at - 1) .. id .. string.sub(payload, at + 6)
          end
        end
        redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], epoch .. '-' .. seq, 'k', ARGV[3], 'c', ARGV[4], 'p', payload)
        redis.call('SET', KEYS[4], ARGV[6] .. ' ' .. epoch .. ' ' .. seq, 'EX', 3600)
        return {tonumber(epoch), seq}
        """

    /// Publishes through Redis and returns the message's id. Throws `.engine` when Redis cannot
    /// be reached (after two new connections) or refuses. When it could not be reached, or
    /// refused, nothing was published; when its answer did not come in time, the message may
    /// still be added once Redis gets to it (docs/cluster.md, "Failures").
    func publish(topic: String, key: String?, kind: MessageKind, payload: [UInt8], stampID: Bool = false) throws(RuntimeError) -> UInt64 {
        self.track(topic)
        let capacity = max(1, self.server.configuration.policy(for: topic).streamCapacity)
        let token = String(self.publishCount.add(1, ordering: .relaxed).newValue)
        let epoch = UInt64.random(in: EventIDLayout.epochs)
        let result = try self.queries.withLock { (link: inout RedisLink) throws(RuntimeError) -> (id: UInt64, learned: Bool) in
            let arguments: [[UInt8]] = [
                Array("EVALSHA".utf8), Array(self.scriptSHA.utf8), Array("4".utf8),
                Self.key(topic, "e"), Self.key(topic, "n"), Self.key(topic, "s"), Self.key(topic, "p:" + self.node),
                Array(String(epoch).utf8), Array(String(capacity).utf8),
            ] + StreamEntry.fields(kind: kind, key: key, payload: payload).enumerated().filter { $0.offset % 2 == 1 }.map(\.element)
                + [Array(token.utf8), Array((stampID ? "1" : "0").utf8)]
            // A lost link may have lost only the reply, after Redis ran the script: run it again
            // (at most twice more) with the same token, which returns the first run's id.
            var reply = RedisReply.null
            for attempt in 0..<3 {
                do throws(RuntimeError) {
                    reply = try link.command(arguments, errorReplies: true)
                    if case .error(let message) = reply, message.hasPrefix("NOSCRIPT") {  // Redis restarted
                        try self.loadScript(link)
                        reply = try link.command(arguments, errorReplies: true)
                    }
                    break
                } catch {
                    if attempt == 2 { throw error }
                }
            }
            guard let pair = reply.elements, pair.count == 2, let e = pair[0].integer, let s = pair[1].integer,
                e > 0, EventIDLayout.epochs.contains(UInt64(e)), s > 0
            else {
                throw RuntimeError(.engine, "Redis at \(self.address) refused a publish to \(topic): \(reply)")
            }
            let learned = self.publishedEpochs[topic] != UInt64(e)
            if learned { self.publishedEpochs[topic] = UInt64(e) }
            return (EventIDLayout.id(epoch: UInt64(e), sequence: UInt64(s)), learned)
        }
        // The registry learns the epoch from the first publish, before the reader reads it back:
        // if Redis loses it before that, the reader still sees that it changed. (Outside the
        // `queries` lock: a resume holds the registry's lock while it waits for `queries`.)
        if result.learned { self.registry.noteEpoch(topic: topic, epoch: EventIDLayout.epoch(of: result.id)) }
        return result.id
    }

    // MARK: Tracking a topic

    /// Makes sure this node reads `topic`: the first time, fills its ring from the stream's tail.
    /// If Redis cannot be reached, the reader thread tries again.
    func track(_ topic: String) {
        if self.topics.withLock({ $0.reading[topic] != nil || $0.pending.contains(topic) }) { return }
        if !self.fill(topic) { self.topics.withLock { if $0.reading[topic] == nil { _ = $0.pending.insert(topic) } } }
    }

    /// Whether the topic's fill is still to be done (Redis could not be reached, or the topic's
    /// history was lost), and the epoch it lost, if it did (0 if not).
    func pending(_ topic: String) -> (pending: Bool, lostEpoch: UInt64) {
        self.topics.withLock { ($0.pending.contains(topic), $0.lost[topic] ?? 0) }
    }

    /// Reads the epoch and the last `replayCapacity` entries of the topic, gives them to the
    /// registry and starts reading after them. False when Redis could not be reached.
    ///
    /// `afterGap`: the topic was used here while its history could not be read (Redis was
    /// unreachable, or had lost it): its subscribers here may have missed messages, so they are
    /// closed with 1012 to resume.
    private func fill(_ topic: String, afterGap: Bool = false) -> Bool {
        let capacity = self.server.configuration.policy(for: topic).replayCapacity
        let found: (epoch: UInt64, frames: [SharedFrame], newest: UInt64, last: String)? = self.queries.withLock { link in
            do throws(RuntimeError) {
                let epochReply = try link.command([Array("GET".utf8), Self.key(topic, "e")])
                let tail = try link.command([Array("XREVRANGE".utf8), Self.key(topic, "s"), Array("+".utf8), Array("-".utf8),
                                             Array("COUNT".utf8), Array(String(max(capacity, 1)).utf8)])
                let entries = (tail.elements ?? []).reversed().compactMap { Self.entry(topic, $0) }
                let epoch = epochReply.text.flatMap { UInt64($0) } ?? 0
                let last = entries.last.map { "\(EventIDLayout.epoch(of: $0.eventID))-\(EventIDLayout.sequence(of: $0.eventID))" }
                return (epoch, capacity > 0 ? entries : [], entries.last?.eventID ?? 0, last ?? "0-0")
            } catch {
                return nil
            }
        }
        guard let found else { return false }
        let filled = self.topics.withLock { state -> Bool in
            state.pending.remove(topic)
            state.lost.removeValue(forKey: topic)
            guard state.reading[topic] == nil else { return false }
            self.registry.fill(topic: topic, epoch: found.epoch, frames: found.frames, newest: found.newest, capacity: capacity)
            state.reading[topic] = found.last
            return true
        }
        if filled && afterGap { self.server.closeSubscribers(of: topic) }
        // Observed topics are filled only at start and by the reader thread: in order.
        if filled, let observe = self.server.observer(of: topic) { for f in found.frames { observe(f) } }
        return true
    }

    /// A stream entry `[id, [field, value, ...]]` as a frame; nil when it is not one of ours
    /// (`StreamEntry`).
    static func entry(_ topic: String, _ reply: RedisReply) -> SharedFrame? {
        guard let pair = reply.elements, pair.count == 2, let id = pair[0].bytes, let fields = pair[1].elements else { return nil }
        var values: [[UInt8]] = []
        values.reserveCapacity(fields.count)
        for f in fields {
            guard let b = f.bytes else { return nil }
            values.append(b)
        }
        guard let e = StreamEntry(id: id, fields: values) else { return nil }
        return SharedFrame(topic: topic, key: e.key, eventID: e.eventID, kind: e.kind, payload: e.payload)
    }

    // MARK: Resuming

    /// The messages of `topic` after `eventID` up to (not including) `before`, read with
    /// `XRANGE`; nil when Redis cannot be reached or no longer holds them all.
    func older(topic: String, after eventID: UInt64, before: UInt64) -> [SharedFrame]? {
        // The last one wanted is `before - 1` (`before` itself may be past the epoch's last
        // sequence, in the next epoch's bits).
        guard before > 0 else { return [] }
        let epoch = EventIDLayout.epoch(of: before - 1)
        let from = eventID == 0 ? 1 : EventIDLayout.sequence(of: eventID) + 1
        let to = EventIDLayout.sequence(of: before - 1)
        if to < from { return [] }
        let reply: RedisReply? = self.queries.withLock { link in
            try? link.command([Array("XRANGE".utf8), Self.key(topic, "s"), Array("\(epoch)-\(from)".utf8), Array("\(epoch)-\(to)".utf8)])
        }
        guard let entries = reply?.elements else { return nil }
        let frames = entries.compactMap { Self.entry(topic, $0) }
        guard frames.count == Int(to - from + 1), frames.first?.eventID == EventIDLayout.id(epoch: epoch, sequence: from) else { return nil }
        return frames
    }

    /// Whether Redis gave out `eventID` for `topic` (its epoch is the topic's, and its sequence
    /// was reached), though this node has not read it yet.
    func hasGivenOut(topic: String, _ eventID: UInt64) -> Bool {
        let reply: RedisReply? = self.queries.withLock { link in
            try? link.command([Array("MGET".utf8), Self.key(topic, "e"), Self.key(topic, "n")])
        }
        guard let pair = reply?.elements, pair.count == 2, let e = pair[0].text.flatMap({ UInt64($0) }),
            let n = pair[1].text.flatMap({ UInt64($0) })
        else { return false }
        return e == EventIDLayout.epoch(of: eventID) && EventIDLayout.sequence(of: eventID) <= n
    }

    // MARK: The reader thread

    private func readLoop() {
        var backoff = 0
        var checkEpochs = false
        var lastCheck: UInt64 = 0
        while !self.stopping.load(ordering: .acquiring) {
            let pending = self.topics.withLock { Array($0.pending) }
            for topic in pending where !self.stopping.load(ordering: .acquiring) { _ = self.fill(topic, afterGap: true) }
            var reading = self.topics.withLock { $0.reading.sorted { $0.key < $1.key } }
            if reading.isEmpty {
                var ts = timespec(tv_sec: 0, tv_nsec: 20_000_000)
                nanosleep(&ts, nil)
                continue
            }
            do throws(RuntimeError) {
                // Epochs are compared on every new link (the Redis behind it may be a new one,
                // even when this thread saw no error: it may have connected only after a restart)
                // and once a second (a flushed Redis keeps the link).
                if !self.reader.isConnected {
                    try self.reader.connect()
                    checkEpochs = true
                }
                let now = monotonicMilliseconds()
                if checkEpochs || now &- lastCheck >= Self.epochCheckMilliseconds {
                    try self.checkEpochs(reading.map(\.key))
                    checkEpochs = false
                    lastCheck = now
                    // A topic whose history was lost is filled again first, not read on.
                    reading = self.topics.withLock { $0.reading.sorted { $0.key < $1.key } }
                    if reading.isEmpty { continue }
                }
                var arguments: [[UInt8]] = [Array("XREAD".utf8), Array("COUNT".utf8), Array(String(Self.readBatch).utf8),
                                            Array("BLOCK".utf8), Array(String(Self.blockMilliseconds).utf8), Array("STREAMS".utf8)]
                arguments += reading.map { Self.key($0.key, "s") }
                arguments += reading.map { Array($0.value.utf8) }
                let reply = try self.reader.command(arguments, readTimeout: Self.blockMilliseconds + self.reader.timeout)
                backoff = 0
                for stream in reply.elements ?? [] {
                    guard let pair = stream.elements, pair.count == 2, let key = pair[0].text, let entries = pair[1].elements,
                        let topic = Self.topic(ofStreamKey: key)
                    else { continue }
                    for raw in entries {
                        guard let id = raw.elements?.first?.text else { continue }
                        if let frame = Self.entry(topic, raw) { self.server.deliverFromEngine(frame) }
                        self.topics.withLock { if $0.reading[topic] != nil { $0.reading[topic] = id } }
                    }
                }
            } catch {
                // Redis went away: try again after a pause (100 ms doubling to 2 s), then look
                // at every topic's epoch before reading on.
                checkEpochs = true
                backoff = backoff == 0 ? 100 : min(backoff * 2, 2_000)
                var slept = 0
                while slept < backoff && !self.stopping.load(ordering: .acquiring) {
                    var ts = timespec(tv_sec: 0, tv_nsec: 20_000_000)
                    nanosleep(&ts, nil)
                    slept += 20
                }
            }
        }
        if self.stoppedFromReader {
            self.queries.withLock { $0.disconnect() }
            self.reader.disconnect()
        }
    }

    /// A topic lost its history when its epoch in Redis is not the one this node reads (Redis
    /// restarted without it, or was flushed), or its sequence is below the last one read here
    /// (Redis came back from an older copy). Its subscribers here are closed (1012) and it is
    /// filled again from its stream's tail. One `MGET` of every topic's epoch and sequence.
    private func checkEpochs(_ topics: [String]) throws(RuntimeError) {
        // What this node knows, read before Redis is asked: an epoch a publish teaches the
        // registry meanwhile is then not taken for a change.
        let known = topics.map { (epoch: self.registry.epoch(of: $0), last: self.registry.statistics($0).lastEventID) }
        let reply = try self.reader.command([Array("MGET".utf8)] + topics.map { Self.key($0, "e") } + topics.map { Self.key($0, "n") })
        guard let values = reply.elements, values.count == 2 * topics.count else {
            throw RuntimeError(.engine, "Redis at \(self.address): MGET answered \(reply)")
        }
        for (i, topic) in topics.enumerated() {
            let epoch = values[i].text.flatMap { UInt64($0) } ?? 0
            let sequence = values[topics.count + i].text.flatMap { UInt64($0) } ?? 0
            let k = known[i]
            let lastSequence = k.last != 0 && EventIDLayout.epoch(of: k.last) == k.epoch ? EventIDLayout.sequence(of: k.last) : 0
            guard k.epoch != 0 && (epoch != k.epoch || sequence < lastSequence) else { continue }
            self.server.historyLost(topic: topic)
            self.topics.withLock {
                $0.reading[topic] = nil
                $0.pending.insert(topic)
                $0.lost[topic] = k.epoch
            }
        }
    }

    static func topic(ofStreamKey key: String) -> String? {
        guard key.hasPrefix("petrel:{"), key.hasSuffix("}:s") else { return nil }
        return String(key.dropFirst(8).dropLast(3))
    }
}
