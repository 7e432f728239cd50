// Micro-benchmarks of PetrelCore's per-byte and per-frame work, each next to a physical reference
// (memcpy for masking and validation). Prints one line per measurement and a JSON line at the end.
import CZlib
import Foundation
import PetrelCore

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Runs `body` (which processes `bytesPerCall` bytes) repeatedly for about `seconds`; returns bytes/s.
/// Not optimised, so that `body` stays an opaque call: the optimiser cannot merge or drop the
/// repeated identical work (it otherwise elides repeated memcpy of the same buffer).
@_optimize(none)
func rate(bytesPerCall: Int, seconds: Double = 0.4, _ body: () -> Void) -> Double {
    for _ in 0..<3 { body() }  // warm caches
    var calls = 0
    let start = now()
    var elapsed = 0.0
    repeat {
        for _ in 0..<16 { body() }
        calls += 16
        elapsed = now() - start
    } while elapsed < seconds
    return Double(calls * bytesPerCall) / elapsed
}

nonisolated(unsafe) var results: [(String, Double, String)] = []
func report(_ name: String, _ value: Double, _ unit: String) {
    results.append((name, value, unit))
    let shown = unit == "GB/s" ? value / 1e9 : (unit == "Mops/s" ? value / 1e6 : value)
    print(name.padding(toLength: 44, withPad: " ", startingAt: 0), String(format: "%8.2f %@", shown, unit))
}

nonisolated(unsafe) var sink: UInt64 = 0

// MARK: masking vs memcpy
for size in [64 * 1024, 1024 * 1024] {
    let a = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
    let b = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
    for i in 0..<size { a[i] = UInt8(truncatingIfNeeded: i &* 31) }
    let label = size >= 1 << 20 ? "\(size >> 20) MiB" : "\(size >> 10) KiB"
    // Read one byte of the copy back each time, so the copy is observable and cannot be dropped.
    var probe = 0
    let copy = rate(bytesPerCall: size) {
        memcpy(b.baseAddress!, a.baseAddress!, size)
        probe = (probe &+ 4093) % size
        sink &+= UInt64(b[probe])
    }
    let mask = rate(bytesPerCall: size) { Masking.apply(key: 0x3D21_FA37, offset: 1, to: a) }
    let byteLoop = rate(bytesPerCall: size, seconds: 0.2) { Masking.applyReference(key: 0x3D21_FA37, offset: 1, to: a) }
    sink &+= UInt64(a[7]) &+ UInt64(b[9])
    report("memcpy \(label)", copy, "GB/s")
    report("mask \(label)", mask, "GB/s")
    report("mask \(label), byte loop (reference)", byteLoop, "GB/s")
    report("mask/memcpy \(label)", mask / copy, "x")
    a.deallocate()
    b.deallocate()
}

// MARK: UTF-8 validation
func validationRate(_ text: [UInt8]) -> Double {
    text.withUnsafeBytes { p in
        rate(bytesPerCall: p.count) {
            var v = UTF8Validator()
            if v.validate(p) != nil { sink &+= 1 }
        }
    }
}
let tick = #"{"id":1842,"ticker":"AAPL","company":"Apple Inc.","price":189.25,"change":-0.42,"changePercent":-0.22,"time":"2026-11-21T09:30:00.125Z"}"#
var ascii: [UInt8] = []
while ascii.count < 64 * 1024 { ascii += Array(tick.utf8) }
var mixed: [UInt8] = []
let mixedSample = "Zürich Straße ½ κόσμε 東京証券取引所 😀 price €12,50 — "
while mixed.count < 64 * 1024 { mixed += Array(mixedSample.utf8) }
report("utf8 validate, ASCII JSON 64 KiB", validationRate(ascii), "GB/s")
report("utf8 validate, mixed scripts 64 KiB", validationRate(mixed), "GB/s")

// MARK: frame parse and encode (20-byte text, as in the echo benchmarks)
do {
    var client = Session(role: .client, entropy: .seeded(1))
    let payload = Array("0123456789abcdefghij".utf8)
    let frames = 4096
    for _ in 0..<frames { try! payload.withUnsafeBytes { try client.send(.text, $0) } }
    let wire = client.takeOutput()
    let work = UnsafeMutableRawBufferPointer.allocate(byteCount: wire.count, alignment: 16)
    let parse = rate(bytesPerCall: frames) {
        wire.withUnsafeBytes { work.copyMemory(from: $0) }
        var server = Session(role: .server)
        var offset = 0
        while offset < work.count {
            let (n, event) = server.parse(UnsafeMutableRawBufferPointer(rebasing: work[offset...]))
            offset += n
            if case .text(let p)? = event { sink &+= UInt64(p.count) }
        }
    }
    report("parse+unmask+validate 20 B text frames", parse, "Mops/s")
    var server = Session(role: .server)
    let encode = rate(bytesPerCall: frames) {
        payload.withUnsafeBytes { p in
            for _ in 0..<frames { try! server.send(.text, p) }
        }
        sink &+= UInt64(server.pendingOutputCount)
        server.consumeOutput(server.pendingOutputCount)
    }
    report("encode 20 B text frames (server)", encode, "Mops/s")
    work.deallocate()
}

// MARK: permessage-deflate of a stock-tick stream, next to zlib's own rate on the same messages
do {
    // 512 distinct ticks, as a feed would send them: the same keys, a random walk of prices.
    var rng = EntropySource.seeded(7)
    let tickers = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "BRK.B", "JPM", "V", "XOM", "UNH"]
    var prices = tickers.map { _ in 50.0 + Double(rng.next32() % 400) }
    var ticks: [[UInt8]] = []
    for i in 0..<512 {
        let k = Int(rng.next32()) % tickers.count
        let change = (Double(Int(rng.next32() % 200)) - 100) / 100
        prices[k] = max(1, prices[k] + change)
        let t = String(format: #"{"id":%d,"ticker":"%@","price":%.2f,"change":%.2f,"changePercent":%.2f,"volume":%d,"time":"2026-11-21T09:%02d:%02d.%03dZ"}"#,
                       i, tickers[k], prices[k], change, change / prices[k] * 100, Int(rng.next32() % 100_000), i / 60 % 60, i % 60, i % 1000)
        ticks.append(Array(t.utf8))
    }
    let totalBytes = ticks.reduce(0) { $0 + $1.count }
    // Petrel: a server session compressing with context takeover (each message a sync-flushed block).
    var options = DeflateOptions()
    options.minimumSize = 0
    var server = Session(role: .server, compression: Compression(parameters: DeflateParameters(), options: options))
    var wireBytes = 0
    let deflateRate = rate(bytesPerCall: totalBytes) {
        for t in ticks { t.withUnsafeBytes { try! server.send(.text, $0) } }
        wireBytes = server.pendingOutputCount
        server.consumeOutput(server.pendingOutputCount)
    }
    // zlib alone: the same messages through one raw deflate stream, level 1, Z_SYNC_FLUSH each.
    var z = z_stream()
    _ = deflateInit2_(&z, 1, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
    let zout = UnsafeMutablePointer<UInt8>.allocate(capacity: 4096)
    let zlibRate = rate(bytesPerCall: totalBytes) {
        for var t in ticks {
            t.withUnsafeMutableBufferPointer { p in
                z.next_in = p.baseAddress
                z.avail_in = UInt32(p.count)
                z.next_out = zout
                z.avail_out = 4096
                _ = deflate(&z, Z_SYNC_FLUSH)
            }
        }
    }
    deflateEnd(&z)
    report("deflate tick JSON, Petrel session", deflateRate, "GB/s")
    report("deflate tick JSON, zlib alone (reference)", zlibRate, "GB/s")
    report("deflate Petrel/zlib", deflateRate / zlibRate, "x")
    report("tick JSON wire/plain (context takeover)", Double(wireBytes) / Double(totalBytes), "ratio")

    // Inflate: a client session reading what a compressing server sent (frames pre-built once).
    var sender = Session(role: .server, compression: Compression(parameters: DeflateParameters(), options: options))
    for t in ticks { t.withUnsafeBytes { try! sender.send(.text, $0) } }
    let wire = sender.takeOutput()
    let work = UnsafeMutableRawBufferPointer.allocate(byteCount: wire.count, alignment: 16)
    let inflateRate = rate(bytesPerCall: totalBytes) {
        wire.withUnsafeBytes { work.copyMemory(from: $0) }
        var client = Session(role: .client, compression: Compression(parameters: DeflateParameters(), options: options))
        var offset = 0
        while offset < work.count {
            let (n, event) = client.parse(UnsafeMutableRawBufferPointer(rebasing: work[offset...]))
            offset += n
            if case .text(let p)? = event { sink &+= UInt64(p.count) }
        }
    }
    // zlib alone: inflate the same deflate stream (the payloads of those frames, tails restored).
    var payloads: [[UInt8]] = []
    var i = 0
    while i < wire.count {
        var len = Int(wire[i + 1] & 0x7F)
        var at = i + 2
        if len == 126 { len = Int(wire[i + 2]) << 8 | Int(wire[i + 3]); at = i + 4 }
        payloads.append(Array(wire[at..<at + len]) + [0, 0, 0xFF, 0xFF])
        i = at + len
    }
    let iout = UnsafeMutablePointer<UInt8>.allocate(capacity: 65536)
    let zlibInflate = rate(bytesPerCall: totalBytes) {
        var zi = z_stream()
        _ = inflateInit2_(&zi, -15, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        for var p in payloads {
            p.withUnsafeMutableBufferPointer { b in
                zi.next_in = b.baseAddress
                zi.avail_in = UInt32(b.count)
                zi.next_out = iout
                zi.avail_out = 65536
                _ = inflate(&zi, Z_SYNC_FLUSH)
            }
        }
        inflateEnd(&zi)
    }
    report("inflate tick JSON, Petrel session (parse+inflate+validate)", inflateRate, "GB/s")
    report("inflate tick JSON, zlib alone (reference)", zlibInflate, "GB/s")
    report("inflate Petrel/zlib", inflateRate / zlibInflate, "x")
    work.deallocate()
}

let fields = results.map { "\"\($0.0)\": \(String(format: "%.4g", $0.1))" }.joined(separator: ", ")
print("{\(fields)}")
if sink == 42 { print("") }
