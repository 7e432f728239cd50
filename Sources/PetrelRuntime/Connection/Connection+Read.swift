import CLinux
import Glibc
import PetrelCore

/// The read path: bytes from the socket (or from the TLS layers) to the handshake, the frame
/// parser and the application's callbacks; pausing reads while the peer does not read ours.
extension Connection {
    func readable() {
        switch self.phase {
        case .closed:
            return
        case .connecting:
            return  // the loop hands connect completion to writable()
        default:
            break
        }
        if self.readPaused { return }
        let buffer = self.loop.readBuffer
        // At most 4 full buffers (1 MiB) per turn, then back to the loop (epoll is level-
        // triggered: it comes back): one fast sender cannot keep the loop from its other
        // connections, nor from a pause the application has queued to it.
        var turns = (1 << 20) / EventLoop.readBufferSize
        while true {
            switch Syscall.read(self.fd, buffer) {
            case .wouldBlock:
                return
            case .eof:
                self.endOfStream()
                return
            case .failed(let e):
                self.closeTransport(reason: .abnormalClosure, message: "read failed: \(String(cString: strerror(e)))")
                return
            case .done(let n):
                self.lastReceive = self.loop.now
                self.countIn(n)
                if self.state.pointee.awaitingProxyHeader {
                    self.proxyHeaderBytes(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                } else if self.wantsTLS || self.proxy != nil || self.refusedPlaintext {
                    self.receiveThroughLayers(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                } else {
                    self.consume(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]))
                }
                turns -= 1
                if self.phase == .closed || self.readPaused || n < buffer.count || turns == 0 { return }
            }
        }
    }

    func consume(_ bytes: UnsafeMutableRawBufferPointer) {
        switch self.phase {
        case .handshaking:
            if self.role == .server { self.serverHandshake(bytes) } else { self.clientHandshakeBytes(bytes) }
        case .open:
            if self.eventStream { return }  // an SSE client has nothing more to say
            self.parseFrames(bytes)
        default:
            break  // draining: discard until the peer closes
        }
    }

    func parseFrames(_ bytes: UnsafeMutableRawBufferPointer) {
        // Callbacks are set before the server starts (see `Handlers`): read once per read, not
        // once per message, and passed down as a parameter, which costs no reference count per
        // call (a call through a stored or optional closure retains its context around it).
        if self.extras?.stomp != nil {
            self.parseFrames(bytes) { c, _, payload in c.stompReceive(payload) }
        } else if let onMessage = self.handlers.onMessage {
            self.parseFrames(bytes, onMessage)
        } else {
            self.parseFrames(bytes) { _, _, _ in }
        }
    }

    func parseFrames(_ bytes: UnsafeMutableRawBufferPointer, _ onMessage: (Connection, MessageKind, UnsafeRawBufferPointer) -> Void) {
        var offset = 0
        while offset < bytes.count {
            if (self.queuedBytes >= self.options.maxBackpressure || self.readHeld) && self.session.wantsRead {
                // The peer is not reading what we send, or the application holds reading: stop
                // reading what the peer sends (TCP pushes back), keeping the unparsed rest, until
                // our buffer drains and the application lets go.
                self.unparsedInput.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[offset...]))
                self.pauseReading()
                break
            }
            let rest = UnsafeMutableRawBufferPointer(rebasing: bytes[offset...])
            // A whole small message, the common case, straight to the callback (see
            // `Session.takeWholeDataFrame`); everything else through `parse` and `dispatch`.
            if let m = self.session.takeWholeDataFrame(rest) {
                offset += m.used
                onMessage(self, m.kind, m.payload)
                if self.phase != .open { return }
                continue
            }
            // Parsing may queue a close frame: it must follow every topic frame already queued.
            if !self.sharedOut.isEmpty { self.spillShared() }
            let (used, event) = self.session.parse(rest)
            offset += used
            if let event { self.dispatch(event) }
            if self.phase != .open { return }
        }
        if self.session.pendingOutputCount > 0 || self.session.state != .open { self.loop.markDirty(self) }
    }

    func dispatch(_ event: Event) {
        switch event {
        case .text(let p), .binary(let p):
            if self.extras?.stomp != nil { return self.stompReceive(p) }
            if case .text = event { self.handlers.onMessage?(self, .text, p) } else { self.handlers.onMessage?(self, .binary, p) }
        case .ping:
            self.loop.markDirty(self)
        case .pong(let p):
            if self.awaitingPong {
                self.awaitingPong = false
                self.rtt.store(Int(self.loop.now - self.pingSentAt), ordering: .relaxed)
                // The next ping is due an interval after this pong, which can be before the pong
                // deadline the wheel holds (a ping interval shorter than the pong timeout).
                self.armTimer()
            }
            self.handlers.onPong?(self, p)
        case .close(let code, let reason):
            if !self.closedFirst {
                self.closeCode = code ?? .noStatusReceived
                self.closeReason = String(decoding: reason, as: UTF8.self)
            }
            self.moveBacklogIntoOutput(all: false)
            self.deadline = self.loop.now + UInt64(self.options.closeTimeout)
        case .failed(let error):
            self.closeCode = error.closeCode
            self.closeReason = error.description
            self.deadline = self.loop.now + UInt64(self.options.closeTimeout)
        }
    }

    func pauseReading() {
        guard !self.readPaused else { return }
        self.readPaused = true
        self.updateInterest()
    }

    func resumeReading() {
        guard self.readPaused, !self.readHeld else { return }
        self.readPaused = false
        self.updateInterest()
        if !self.unparsedInput.isEmpty {
            var pending = self.unparsedInput
            self.unparsedInput = []
            // Pipelined plain requests wait here too (`serverHandshake`), in the door's phase.
            if self.phase == .handshaking {
                pending.withUnsafeMutableBytes { self.serverHandshake($0) }
            } else {
                pending.withUnsafeMutableBytes { self.parseFrames($0) }
            }
        }
    }

    func holdReadingOnLoop(_ hold: Bool) {
        guard self.phase == .open, !self.eventStream, hold != self.readHeld else { return }
        // Once a close has begun, the peer's close frame must be read: no new hold.
        if hold && self.session.state != .open { return }
        self.readHeld = hold
        if hold { self.pauseReading() } else { self.resumeReading() }
    }

    func endOfStream() {
        switch self.phase {
        case .open where !self.eventStream:
            if let error = self.session.receiveEndOfStream() {
                self.closeCode = error.closeCode
                self.closeReason = error.description
            }
            self.closeTransport(reason: self.closeCode, message: self.closeReason)
        case .handshaking where self.role == .client:
            self.failConnect(RuntimeError(.handshake, "server closed the connection during the handshake"))
        default:
            self.closeTransport(reason: self.closeCode, message: self.closeReason)
        }
    }
}
