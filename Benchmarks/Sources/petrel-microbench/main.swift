// Micro-benchmarks of PetrelCore's per-byte and per-frame work, each next to a physical reference
// (memcpy for masking and validation). Prints one line per measurement and a JSON line at the end.
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

let fields = results.map { "\"\($0.0)\": \(String(format: "%.4g", $0.1))" }.joined(separator: ", ")
print("{\(fields)}")
if sink == 42 { print("") }
