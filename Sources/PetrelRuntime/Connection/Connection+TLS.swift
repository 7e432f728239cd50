import CLinux
import Glibc
import PetrelCore

/// The TLS stack of a connection: zero, one or two TLS layers (TLS to the server inside TLS to
/// an https:// proxy), with bytes passed up through them on reading and down on writing.
extension Connection {
    /// Bytes from the socket: up through the TLS layers, then to the proxy negotiation or the
    /// protocol as plaintext.
    func receiveThroughLayers(_ bytes: UnsafeRawBufferPointer) {
        if self.refusedPlaintext { return }
        if self.tlsLayers.isEmpty && self.role == .server {
            guard let contexts = self.server?.tlsContexts else { return }
            // A TLS connection starts with a handshake record (content type 22).
            guard bytes.first == 0x16 else {
                self.refusedPlaintext = true  // from now on every byte is dropped
                self.handshakeBox = nil
                return self.respondAndClose(HTTPResponse.error(status: 400, body: "this port speaks TLS: use https:// or wss://"))
            }
            do throws(RuntimeError) {
                self.addLayer(try TLSSession(context: contexts.context, server: true))
            } catch {
                return self.closeTransport(reason: .abnormalClosure, message: error.message)
            }
        }
        let before = self.tlsLayers.map(\.handshakeComplete)
        self.receive(bytes, depth: 0)
        guard self.phase != .closed else { return }
        let progressed = self.tlsLayers.map(\.handshakeComplete) != before
        if self.tlsLayers.contains(where: { $0.pendingOutput > 0 }) || (progressed && (self.plaintextPending > 0 || !self.proxyOut.isEmpty)) {
            self.loop.markDirty(self)
        }
    }

    func addLayer(_ tls: TLSSession) {
        self.tlsLayers.append(tls)
        self.layerPending.append([])
    }

    /// Feeds `bytes` to layer `depth` and passes its plaintext up; above the last layer, to the
    /// proxy negotiation or the protocol.
    func receive(_ bytes: UnsafeRawBufferPointer, depth: Int) {
        guard depth < self.tlsLayers.count else {
            if self.proxyHandshake != nil { return self.proxyBytes(bytes) }
            return self.consume(UnsafeMutableRawBufferPointer(mutating: bytes))
        }
        let tls = self.tlsLayers[depth]
        tls.feed(bytes)
        // The outermost layer reads into the loop's buffer; the inner one (TLS inside an https://
        // proxy's tunnel) into the connection's own, made once.
        if depth > 0 && self.innerPlain.isEmpty { self.innerPlain = [UInt8](repeating: 0, count: 16 * 1024) }
        if depth > 0 {
            self.innerPlain.withUnsafeMutableBytes { self.readLayer(tls, into: $0, depth: depth) }
        } else {
            self.readLayer(tls, into: self.loop.tlsBuffer, depth: depth)
        }
    }

    /// Reads layer `depth`'s plaintext and passes it up.
    func readLayer(_ tls: TLSSession, into plain: UnsafeMutableRawBufferPointer, depth: Int) {
        while self.phase != .closed {
            switch tls.read(into: plain) {
            case .data(let n):
                self.receive(UnsafeRawBufferPointer(rebasing: plain[0..<n]), depth: depth + 1)
            case .needMore:
                return
            case .closed:
                return self.endOfStream()
            case .failed(let reason):
                return self.tlsFailed(reason)
            }
        }
    }

    func tlsFailed(_ reason: String) {
        let error = RuntimeError(.tls, "TLS: \(reason)")
        if self.role == .client && self.phase != .open { return self.failConnect(error) }
        self.closeTransport(reason: .abnormalClosure, message: error.message)
    }

    /// Moves output down the stack: the session's plaintext into the innermost TLS layer (once
    /// any proxy tunnel is up), proxy negotiation bytes into the layer under the tunnel, each
    /// layer's ciphertext into the layer below, and the outermost's into `tlsOut`.
    func pumpLayers() -> Bool {
        if self.proxyHandshake == nil, let top = self.tlsLayers.last {
            while self.plaintextPending > 0 {
                guard let n = self.withNextPlaintext({ top.write($0) }) else {
                    self.tlsFailed(top.failureText())
                    return false
                }
                if n == 0 { break }  // that layer's handshake is not done yet
                self.consumePlaintext(n)
            }
        } else if self.proxyHandshake == nil && self.tlsLayers.isEmpty {
            // A plain tunnel: the bytes go out as they are.
            while self.plaintextPending > 0 {
                let n = self.withNextPlaintext { p in self.tlsOut.append(contentsOf: p); return p.count }
                self.consumePlaintext(n)
            }
        }
        if !self.proxyOut.isEmpty {
            if let under = self.tlsLayers.last {
                guard let n = self.proxyOut.withUnsafeBytes({ under.write($0) }) else {
                    self.tlsFailed(under.failureText())
                    return false
                }
                self.proxyOut.removeFirst(n)
            } else {
                self.tlsOut += self.proxyOut
                self.proxyOut = []
            }
        }
        for d in stride(from: self.tlsLayers.count - 1, through: 0, by: -1) {
            let layer = self.tlsLayers[d]
            if d == 0 {
                layer.takeOutput(into: &self.tlsOut)
                continue
            }
            layer.takeOutput(into: &self.layerPending[d])
            while !self.layerPending[d].isEmpty {
                guard let n = self.layerPending[d].withUnsafeBytes({ self.tlsLayers[d - 1].write($0) }) else {
                    self.tlsFailed(self.tlsLayers[d - 1].failureText())
                    return false
                }
                if n == 0 { break }  // the outer handshake is not done yet
                self.layerPending[d].removeFirst(n)
            }
        }
        return true
    }
}
