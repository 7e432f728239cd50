import CLinux
import Glibc
import PetrelCore

/// Closing: the closing handshake, the half-close and drain that follow it, a server's stop,
/// and the end of the transport.
extension Connection {
    func closeOnLoop(code: CloseCode, reason: String) {
        switch self.phase {
        case .open where !self.eventStream:
            guard self.session.state == .open else { return }
            self.spillShared()
            self.moveBacklogIntoOutput(all: true)
            var r = reason
            while r.utf8.count > 123 { r.removeLast() }
            do { try self.session.close(code: code, reason: r) } catch { return }
            self.closeCode = code
            self.closeReason = r
            self.closedFirst = true
            self.deadline = self.loop.now + UInt64(self.options.closeTimeout)
            self.loop.markDirty(self)
            // The peer's close frame must be read, whatever the application held.
            self.holdReadingOnLoop(false)
        case .open:
            self.closeCode = code
            self.closeReason = reason
            self.closeAfterFlush = true
            // A stream whose client does not read is closed anyway after closeTimeout.
            self.deadline = self.loop.now + UInt64(self.options.closeTimeout)
            self.loop.markDirty(self)
        case .connecting, .handshaking:
            self.closeTransport(reason: code, message: reason)
        case .draining, .closed:
            break
        }
    }

    /// With everything written: close the transport if the protocol says so.
    func afterOutputWritten() {
        if self.closeAfterFlush {
            self.closeAfterFlush = false
            return self.beginDrain()
        }
        guard self.phase == .open, self.session.state == .closed else { return }
        if self.session.shouldCloseTransport {
            // §7.1.1: the server closes TCP first; after a failure, either side does.
            self.beginDrain()
        } else {
            // A client that completed the closing handshake waits for the server's FIN.
            self.phase = .draining
            self.deadline = self.loop.now + UInt64(self.options.closeTimeout)
        }
    }

    /// Half-closes (FIN after our last bytes) and reads until the peer closes, so that unread
    /// input does not turn our close into a reset that could destroy what we sent.
    func beginDrain() {
        guard self.phase != .closed, self.phase != .draining else { return }
        if let tls = self.tls, self.tlsOutHead == self.tlsOut.count {
            // close_notify, best effort: the socket has room, everything else is written.
            tls.shutdown()
            if self.pumpLayers() { _ = self.tlsOut.withUnsafeBytes { Syscall.write(self.fd, $0) } }
            self.extras?.tlsOut = []
            self.extras?.tlsOutHead = 0
        }
        shutdown(self.fd, Int32(SHUT_WR))
        self.phase = .draining
        self.readPaused = false
        self.updateInterest()
        self.deadline = self.loop.now + UInt64(min(self.options.closeTimeout, 2_000))
    }

    /// Server stop: close 1001 to a WebSocket peer, end everything else.
    func shutdownForStop() {
        switch self.phase {
        case .open where !self.eventStream:
            self.closeOnLoop(code: .goingAway, reason: "server shutting down")
        case .open:
            self.closeAfterFlush = true
            self.deadline = self.loop.now + UInt64(self.options.closeTimeout)
            self.loop.markDirty(self)
        default:
            self.closeTransport(reason: .goingAway, message: "server shutting down")
        }
    }

    /// Closes the socket and forgets the connection; calls `onClose` if it had opened.
    func closeTransport(reason: CloseCode, message: String) {
        guard self.phase != .closed else { return }
        let wasOpen = self.openNotified
        self.phase = .closed
        self.closedFlag.store(true, ordering: .releasing)
        if self.fd >= 0 {
            self.loop.unregister(fd: self.fd)
            Syscall.close(self.fd)
            self.fd = -1
        }
        self.loop.forget(self)
        for s in self.subscriptions { self.loop.topics.remove(slot: s.slot, of: s.topic) }
        self.subscriptions = []
        self.state.pointee.stompFast = nil
        self.sharedOut.removeAll()
        self.sharedHead = 0
        self.sharedBytes = 0
        if let e = self.extras {
            e.backlog = []
            e.backlogHead = 0
            e.backlogBytes = 0
            e.unparsedInput = []
            e.plainOutput = []
            e.plainOutputHead = 0
        }
        self.bufferedBytes.store(0, ordering: .relaxed)
        if self.role == .server { self.server?.connectionClosed() }
        if self.closeReason.isEmpty && self.closeCode == .abnormalClosure { self.closeReason = message }
        if wasOpen && self.state.pointee.counting { self.logAccess(.close, status: self.eventStream ? 0 : Int(self.closeCode.rawValue)) }
        if wasOpen {
            self.handlers.onClose?(self, self.closeCode, self.closeReason)
        } else if self.role == .client {
            // Whatever ended a connecting client (refused, reset, timeout, bad handshake) is
            // reported; a refusal whose body was still coming when the transport ended or timed
            // out is reported as the refusal it is.
            let refusal = self.clientHandshake?.refusalSoFar.map(RuntimeError.handshake)
            self.handlers.onConnectFailed?(self, refusal ?? self.connectError ?? RuntimeError(.connect, message))
        }
        self.handlers = Handlers.none
        self.session = Session(role: self.role)
    }
}
