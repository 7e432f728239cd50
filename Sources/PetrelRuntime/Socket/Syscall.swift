import CLinux
import Glibc

/// What a non-blocking read or write did.
enum IOResult {
    case done(Int)
    case wouldBlock
    case eof
    case failed(Int32)
}

/// The system calls the loops make, with EINTR retried and EAGAIN turned into a value.
enum Syscall {
    static func read(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer) -> IOResult {
        while true {
            let n = petrel_read(fd, buffer.baseAddress, buffer.count)
            if n > 0 { return .done(n) }
            if n == 0 { return .eof }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            return .failed(e)
        }
    }

    static func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> IOResult {
        while true {
            let n = petrel_send(fd, bytes.baseAddress, bytes.count)
            if n >= 0 { return .done(n) }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            return .failed(e)
        }
    }

    /// Gathers `count` buffers into one system call.
    static func writev(_ fd: Int32, _ iov: UnsafePointer<iovec>, _ count: Int) -> IOResult {
        while true {
            let n = petrel_sendv(fd, iov, Int32(count))
            if n >= 0 { return .done(n) }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            return .failed(e)
        }
    }

    static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    /// A listening socket on `address`, non-blocking, with SO_REUSEADDR and SO_REUSEPORT so every
    /// loop thread can have its own.
    static func listen(_ address: SocketAddress, backlog: Int32) throws(RuntimeError) -> Int32 {
        let fd = petrel_socket(address.family)
        guard fd >= 0 else { throw .system(.socket, "socket") }
        _ = petrel_set_int_option(fd, SOL_SOCKET, SO_REUSEADDR, 1)
        _ = petrel_set_int_option(fd, SOL_SOCKET, SO_REUSEPORT, 1)
        if address.family == AF_INET6 { _ = petrel_set_int_option(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1) }
        let rc = address.withSockaddr { Glibc.bind(fd, $0, $1) }
        guard rc == 0 else {
            let e = RuntimeError.system(.bind, "bind \(address)")
            Syscall.close(fd)
            throw e
        }
        guard Glibc.listen(fd, backlog) == 0 else {
            let e = RuntimeError.system(.listen, "listen \(address)")
            Syscall.close(fd)
            throw e
        }
        return fd
    }

    static func localAddress(_ fd: Int32) -> SocketAddress {
        var a = SocketAddress()
        a.length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        withUnsafeMutableBytes(of: &a.storage) { raw in
            _ = getsockname(fd, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), &a.length)
        }
        return a
    }

    static func noDelay(_ fd: Int32) {
        _ = petrel_set_int_option(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
    }

    /// Number of open file descriptors of this process (for leak tests and health).
    public static func openFileCount() -> Int {
        guard let dir = opendir("/proc/self/fd") else { return -1 }
        defer { closedir(dir) }
        var n = 0
        while readdir(dir) != nil { n += 1 }
        return n - 3  // ".", ".." and the directory itself
    }
}

