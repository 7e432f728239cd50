import CLinux
import Glibc
import PetrelCore

/// What waits in the backlog for room under the backpressure limit.
enum QueuedFrame {
    case shared(SharedFrame)
    /// A frame written as it is (a STOMP MESSAGE made for one kind of subscriber).
    case wire(SharedFrame)
    case direct(MessageKind, [UInt8])
    case raw([UInt8])

    var byteCount: Int {
        switch self {
        case .shared(let f), .wire(let f): return f.encoded.count
        case .direct(_, let b), .raw(let b): return b.count
        }
    }
}

/// The output queue: the session's bytes, topic frames written straight from their shared
/// memory, the backlog of frames waiting for room under the backpressure limit, and writing
/// all of it to the socket.
extension Connection {
    /// Queues a message. Loop thread only; `package`, for the C layer, which calls it from inside
    /// a callback (where it knows the thread).
    ///
    /// `accepted`: `send` already said `.ok` to a caller on another thread, after checking the
    /// limit against `bufferedAmount`: the message is queued whatever the buffer holds now
    /// (checking again here would drop a message its sender was told was queued).
    package func sendOnLoop(_ kind: MessageKind, _ payload: UnsafeRawBufferPointer, accepted: Bool = false) -> SendStatus {
        if self.eventStream {
            return ServerSentEvents.event(id: 0, payload: payload).withUnsafeBytes { self.sendRawOnLoop($0, accepted: accepted) }
        }
        guard self.phase == .open, self.session.state == .open else { return .closed }
        let queued = self.queuedBytes
        if !accepted && queued >= self.options.maxBackpressure {
            self.wantsDrain = true
            if self.options.closeOnBackpressure { self.closeOnLoop(code: .policyViolation, reason: self.backpressureReason) }
            return .backpressure
        }
        if !self.backlogIsEmpty {
            // Keep order behind queued topic messages.
            self.pushBacklog(.direct(kind, [UInt8](payload)))  // which updates bufferedBytes
        } else {
            self.spillShared()
            // Moving topic frames into the session's buffer leaves the total as it was: what
            // is queued grows by what the session adds.
            let before = self.session.pendingOutputCount
            if !self.session.sendShort(kind, payload) {
                do { try self.session.send(kind, payload) } catch { return .closed }
            }
            self.bufferedBytes.store(queued + self.session.pendingOutputCount - before, ordering: .relaxed)
        }
        self.loop.markDirty(self)
        return .ok
    }

    /// Writes bytes that are already encoded (an SSE event, a shared frame). Loop thread only.
    func sendRawOnLoop(_ bytes: UnsafeRawBufferPointer, accepted: Bool = false) -> SendStatus {
        guard self.phase == .open, self.session.state == .open, !self.closeAfterFlush else { return .closed }
        if !accepted && self.queuedBytes >= self.options.maxBackpressure {
            self.wantsDrain = true
            return .backpressure
        }
        if !self.backlogIsEmpty {
            self.pushBacklog(.raw([UInt8](bytes)))
        } else if self.eventStream {
            self.queuePlain(bytes)
        } else {
            self.spillShared()
            do { try self.session.queueEncoded(bytes) } catch { return .closed }
        }
        self.loop.markDirty(self)
        return .ok
    }

    /// Queues HTTP bytes that are not WebSocket frames: a plain response, an event stream's
    /// head and events, a client's opening request. They go out before the session's bytes, so
    /// a connection uses one or the other for what it writes in order: an event stream and a
    /// plain response only this; a client only this for its request, which precedes any frame.
    func queuePlain(_ bytes: UnsafeRawBufferPointer) {
        self.more.plainOutput.append(contentsOf: bytes)
    }

    /// Plain HTTP bytes not yet written.
    var plainPending: Int {
        guard let e = self.extras else { return 0 }
        return e.plainOutput.count - e.plainOutputHead
    }

    /// Everything still to write above the TLS layers: plain HTTP bytes, then the session's.
    var plaintextPending: Int { self.plainPending + self.session.pendingOutputCount }

    /// Calls `body` with the next contiguous plaintext to write (plain HTTP bytes first).
    func withNextPlaintext<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        if let e = self.extras, e.plainOutputHead < e.plainOutput.count {
            return e.plainOutput.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[e.plainOutputHead...])) }
        }
        return self.session.withPendingOutput(body)
    }

    /// Marks `n` bytes of what `withNextPlaintext` offered as written.
    func consumePlaintext(_ n: Int) {
        if let e = self.extras, e.plainOutputHead < e.plainOutput.count {
            e.plainOutputHead += n
            if e.plainOutputHead == e.plainOutput.count {
                e.plainOutput.removeAll(keepingCapacity: e.plainOutput.capacity <= 64 * 1024)
                e.plainOutputHead = 0
            } else if e.plainOutputHead >= 64 * 1024 && e.plainOutputHead * 2 >= e.plainOutput.count {
                // A reader that never quite catches up must not keep what was written long ago.
                e.plainOutput.removeFirst(e.plainOutputHead)
                e.plainOutputHead = 0
            }
            return
        }
        self.session.consumeOutput(n)
    }

    func pingOnLoop(_ payload: UnsafeRawBufferPointer) -> SendStatus {
        guard self.phase == .open, !self.eventStream else { return .closed }
        do { try self.session.sendPing(payload) } catch { return .closed }
        self.pingQueued = true
        self.lastPing = self.loop.now
        self.loop.markDirty(self)
        return .ok
    }


    /// Output past the backlog: plain HTTP bytes, the session's bytes, queued shared frames and,
    /// with TLS or a proxy, what is encrypted or negotiated but unsent.
    /// Inlined for a connection without extras (no TLS, proxy, plain output or backlog), the
    /// common case, where it is two loads; the rest out of line.
    var outputBytes: Int {
        @inline(__always) get {
            guard let e = self.extras else { return self.session.pendingOutputCount + self.sharedBytes }
            return self.outputBytes(e)
        }
    }

    func outputBytes(_ e: ConnectionExtras) -> Int {
        var n = self.plaintextPending + self.sharedBytes + (e.tlsOut.count - e.tlsOutHead) + e.proxyOut.count
        for p in e.layerPending { n += p.count }
        return n
    }

    /// Everything queued: the output and the backlog (which lives in the extras).
    var queuedBytes: Int {
        @inline(__always) get {
            guard let e = self.extras else { return self.session.pendingOutputCount + self.sharedBytes }
            return self.outputBytes(e) + e.backlogBytes
        }
    }

    var backlogIsEmpty: Bool {
        guard let e = self.extras else { return true }
        return e.backlogHead == e.backlog.count
    }


    func writable() {
        if self.phase == .connecting {
            self.connectCompleted()
            return
        }
        self.flush()
    }

    func flush() {
        guard self.phase != .closed, self.phase != .connecting else { return }
        while true {
            guard self.writeQueued() else { return }
            if self.pingQueued {
                self.pingQueued = false
                self.awaitingPong = true
                self.pingSentAt = self.loop.now
                self.armTimer()
            }
            if !self.moveBacklogIntoOutput(all: false) { break }
        }
        // Everything queued was written and nothing was left to move: the backlog is empty.
        self.backlogged = false
        if self.releaseBuffersAfterFlush {
            // The 101 is out: an idle connection keeps no buffer (the first message makes one).
            self.releaseBuffersAfterFlush = false
            self.session.releaseIdleBuffers()
        }
        self.setWriteInterest(false)
        self.bufferedBytes.store(self.queuedBytes, ordering: .relaxed)
        if self.readPaused {
            self.resumeReading()
            // The stashed input may have queued output (replies, a close echo): write it first.
            if self.plaintextPending > 0 || self.phase == .closed { return self.loop.markDirty(self) }
        }
        if self.wantsDrain && self.queuedBytes == 0 && self.phase == .open {
            self.wantsDrain = false
            self.handlers.onDrain?(self)
            if self.plaintextPending > 0 { return self.loop.markDirty(self) }
        }
        self.afterOutputWritten()
    }

    /// Writes the plain HTTP bytes and the session's output (through the TLS layers and any
    /// proxy negotiation). Returns false when the socket is full (write interest is then on) or
    /// the connection failed.
    func writeQueued() -> Bool {
        if self.extras == nil || (self.tlsLayers.isEmpty && self.proxyOut.isEmpty && self.tlsOutHead == self.tlsOut.count) {
            while self.plainPending > 0 {
                let result = self.withNextPlaintext { Syscall.write(self.fd, $0) }
                guard case .done(let n) = result else { return self.writeFailed(result) }
                self.countOut(n)
                self.consumePlaintext(n)
            }
            while self.session.pendingOutputCount > 0 {
                let result = self.session.withPendingOutput { Syscall.write(self.fd, $0) }
                guard case .done(let n) = result else { return self.writeFailed(result) }
                self.countOut(n)
                self.session.consumeOutput(n)
            }
            while !self.sharedOut.isEmpty {
                guard self.writeShared() else { return false }
            }
            return true
        }
        self.spillShared()
        while true {
            // What is already encrypted goes first: nothing more is encrypted while the socket is full.
            while self.tlsOutHead < self.tlsOut.count {
                let result = self.tlsOut.withUnsafeBytes { Syscall.write(self.fd, UnsafeRawBufferPointer(rebasing: $0[self.tlsOutHead...])) }
                guard case .done(let n) = result else { return self.writeFailed(result) }
                self.countOut(n)
                self.tlsOutHead += n
            }
            self.tlsOut.removeAll(keepingCapacity: self.tlsOut.capacity <= 64 * 1024)
            self.tlsOutHead = 0
            guard self.pumpLayers() else { return false }
            if self.tlsOut.isEmpty { return true }
        }
    }

    /// One writev of queued topic frames (up to `EventLoop.maxIovecs`), straight from their
    /// shared memory. False when the socket is full or failed.
    func writeShared() -> Bool {
        let iov = self.loop.iovecs
        let head = self.sharedHead
        // Lent in place: no reference count touched per frame.
        let count = min(self.sharedOut.count, EventLoop.maxIovecs)
        for i in 0..<count {
            let wire = self.sharedOut.with(i) { $0.wire }
            let skip = i == 0 ? head : 0
            iov[i] = iovec(iov_base: wire.baseAddress! + skip, iov_len: wire.count - skip)
        }
        let result = Syscall.writev(self.fd, iov, count)
        guard case .done(var n) = result else { return self.writeFailed(result) }
        self.countOut(n)
        self.sharedBytes -= n
        // Whole frames written are released; a partly written one stays first, `sharedHead` in.
        var done = 0
        var skip = head
        while done < count {
            let left = iov[done].iov_len
            if n < left {
                self.sharedHead = skip + n
                break
            }
            n -= left
            done += 1
            skip = 0
            self.sharedHead = 0
        }
        self.sharedOut.removeFirst(done)
        return true
    }

    /// Moves queued topic frames into the session's buffer (a copy), ahead of whatever is
    /// written next: for writes that are not topic frames, and for TLS.
    @inline(__always)
    func spillShared() {
        if !self.sharedOut.isEmpty { self.spillSharedFrames() }
    }

    func spillSharedFrames() {
        for i in 0..<self.sharedOut.count {
            let frame = self.sharedOut.with(i) { $0.encoded }
            let bytes = i == 0 ? UnsafeRawBufferPointer(rebasing: frame[self.sharedHead...]) : frame
            _ = try? self.session.queueEncoded(bytes)
        }
        self.sharedOut.removeAll()
        self.sharedHead = 0
        self.sharedBytes = 0
    }

    func writeFailed(_ result: IOResult) -> Bool {
        switch result {
        case .wouldBlock:
            self.setWriteInterest(true)
            self.bufferedBytes.store(self.queuedBytes, ordering: .relaxed)
        case .failed(let e):
            self.closeTransport(reason: .abnormalClosure, message: "write failed: \(String(cString: strerror(e)))")
        case .eof, .done:
            break
        }
        return false
    }

    func pushBacklog(_ item: QueuedFrame) {
        self.backlogged = true
        self.backlog.append(item)
        self.backlogBytes += item.byteCount
        self.bufferedBytes.store(self.queuedBytes, ordering: .relaxed)
    }

    /// Moves queued frames into the output (the session's, or an event stream's plain output)
    /// while it is under the limit (or all of them). Returns whether anything moved.
    @discardableResult
    @inline(__always)
    func moveBacklogIntoOutput(all: Bool) -> Bool {
        // The backlog lives in the extras: most connections have none (and reading
        // `self.backlog` without them makes an empty array).
        guard let e = self.extras, e.backlogHead < e.backlog.count else { return false }
        return self.moveBacklog(all: all)
    }

    func moveBacklog(all: Bool) -> Bool {
        var moved = false
        while self.backlogHead < self.backlog.count && (all || self.outputBytes < self.options.maxBackpressure) {
            let item = self.backlog[self.backlogHead]
            self.backlogHead += 1
            self.backlogBytes -= item.byteCount
            switch item {
            case .shared(let f): self.write(f)
            case .wire(let f): self.writeWire(f)
            case .direct(let kind, let bytes): _ = bytes.withUnsafeBytes { try? self.session.send(kind, $0) }
            case .raw(let bytes) where self.eventStream: bytes.withUnsafeBytes { self.queuePlain($0) }
            case .raw(let bytes): _ = bytes.withUnsafeBytes { try? self.session.queueEncoded($0) }
            }
            moved = true
        }
        if moved && self.backlogHead == self.backlog.count {
            self.backlog.removeAll(keepingCapacity: self.backlog.count < 64)
            self.backlogHead = 0
        }
        return moved
    }

    func setWriteInterest(_ on: Bool) {
        guard on != self.writeInterest else { return }
        self.writeInterest = on
        self.updateInterest()
    }

    func updateInterest() {
        guard self.phase != .closed else { return }
        var events: UInt32 = 0
        if !self.readPaused { events |= UInt32(EPOLLIN.rawValue) }
        if self.writeInterest { events |= UInt32(EPOLLOUT.rawValue) }
        self.loop.modify(fd: self.fd, events: events)
    }
}
