import CLinux
import Glibc
import PetrelCore

/// Timers: the handshake deadline, idle timeout, pings and pongs, and the closing deadlines,
/// checked by the loop when the connection's timer wheel entry falls due (`TimerWheel`), to the
/// loop's `timerResolution`.
extension Connection {
    /// The earliest time `checkTimers` could act, from the state as it is (nil: no timer runs).
    /// Mirrors `checkTimers` case by case; a time that is early is harmless (the check finds
    /// nothing and the connection is armed again), a time that is late is a bug.
    func nextTimerDue() -> UInt64? {
        func earliest(_ a: UInt64?, _ b: UInt64) -> UInt64 { a.map { min($0, b) } ?? b }
        switch self.phase {
        case .connecting, .handshaking, .draining:
            return self.deadline
        case .open:
            var due: UInt64? = nil
            let interval = UInt64(self.options.pingInterval)
            if self.eventStream {
                if self.closeAfterFlush && self.deadline != 0 { due = self.deadline }
                if interval > 0 && !self.closeAfterFlush { due = earliest(due, self.lastPing + interval) }
                return due
            }
            if self.session.state != .open { return self.deadline != 0 ? self.deadline : nil }
            let idle = UInt64(self.options.idleTimeout)
            if idle > 0 { due = self.lastReceive + idle }
            if let stomp = self.extras?.stomp, let d = self.stompTimerDue(stomp) { due = earliest(due, d) }
            guard interval > 0 else { return due }
            if self.awaitingPong {
                return earliest(due, self.pingSentAt + UInt64(self.options.pongTimeout))
            }
            // A ping queued but not yet written arms for its pong when it is written (flush).
            if self.pingQueued { return due }
            return earliest(due, max(self.lastReceive, self.lastPing) + interval)
        case .closed:
            return nil
        }
    }

    /// Arms the loop's timer wheel for `nextTimerDue()`, or takes the connection off it when no
    /// timer runs (an opened connection leaves its handshake deadline's slot at once).
    func armTimer() {
        if let due = self.nextTimerDue() {
            self.loop.armTimer(self, at: due)
        } else if self.timerTick != 0 {
            self.loop.disarmTimer(self)
        }
    }

    func checkTimers(now: UInt64) {
        switch self.phase {
        case .connecting:
            if now >= self.deadline { self.failConnect(RuntimeError(.connectTimeout, "connect to \(self.peerAddress) timed out")) }
        case .handshaking:
            guard now >= self.deadline else { return }
            if self.role == .client {
                self.failConnect(RuntimeError(.handshake, "handshake not completed in \(self.options.handshakeTimeout) ms"))
            } else if !self.tlsLayers.allSatisfy(\.handshakeComplete) {
                self.closeTransport(reason: .abnormalClosure, message: "TLS handshake not completed in \(self.options.handshakeTimeout) ms")
            } else if self.wantsTLS && self.tls == nil {
                self.closeTransport(reason: .abnormalClosure, message: "nothing received in \(self.options.handshakeTimeout) ms")
            } else if let e = self.extras, e.keptAliveIdle {
                // The wait for the next request is over: close once the last response is out,
                // reading nothing more, and at the latest after the close wait.
                e.keptAliveIdle = false
                self.handshakeBox = nil
                self.closeAfterFlush = true
                self.deadline = now + UInt64(self.options.closeTimeout)
                self.armTimer()
                self.loop.markDirty(self)
            } else if !self.closeAfterFlush {
                self.respondAndClose(HandshakeError.timeout.response)
            } else {
                self.closeTransport(reason: .abnormalClosure, message: "handshake timeout")
            }
        case .open:
            if self.eventStream {
                if self.closeAfterFlush && now >= self.deadline && self.deadline != 0 { self.closeTransport(reason: self.closeCode, message: self.closeReason) }
                let interval = self.options.pingInterval
                if interval > 0 && !self.closeAfterFlush && now - self.lastPing >= UInt64(interval) {
                    self.lastPing = now
                    let beat = self.options.heartbeatMessages ? ServerSentEvents.heartbeat : ServerSentEvents.keepalive
                    _ = beat.withUnsafeBytes { self.sendRawOnLoop($0) }
                }
                return
            }
            if self.session.state != .open {
                if self.deadline != 0 && now >= self.deadline {
                    self.closeTransport(reason: self.closeCode, message: self.closeReason.isEmpty ? "close timeout" : self.closeReason)
                }
                return
            }
            if let stomp = self.extras?.stomp, self.stompTimers(now: now, stomp) { return }
            let idle = self.options.idleTimeout
            if idle > 0 && now - self.lastReceive >= UInt64(idle) {
                return self.closeOnLoop(code: .goingAway, reason: "idle for \(idle) ms")
            }
            let interval = self.options.pingInterval
            guard interval > 0 else { return }
            if self.awaitingPong {
                if now - self.pingSentAt >= UInt64(self.options.pongTimeout) {
                    // The peer is gone or a black hole swallows what we send: waiting for its
                    // close frame as well would only delay what the application learns. The
                    // close frame goes out if the socket takes it, then the transport ends.
                    let reason = "no pong within \(self.options.pongTimeout) ms"
                    self.closeOnLoop(code: .internalError, reason: reason)
                    self.flush()
                    self.closeTransport(reason: .internalError, message: reason)
                }
            } else if !self.pingQueued && now - max(self.lastReceive, self.lastPing) >= UInt64(interval) {
                _ = self.pingOnLoop(UnsafeRawBufferPointer(start: nil, count: 0))
                if self.options.heartbeatMessages && self.role == .server && !self.isStomp {
                    _ = self.sendOnLoop(.text, UnsafeRawBufferPointer(start: nil, count: 0), accepted: true)
                }
            }
        case .draining:
            if now >= self.deadline { self.closeTransport(reason: self.closeCode, message: self.closeReason) }
        case .closed:
            break
        }
    }
}
