/// Splits a fuzz input into the stream and the read sizes to deliver it in: the first byte
/// chooses the pattern, so every split of the stream (down to one byte at a time) is tried.
public struct Chunks {
    public let stream: [UInt8]
    private let sizes: [Int]

    public init(_ data: UnsafePointer<UInt8>, _ size: Int) {
        guard size > 0 else {
            self.stream = []
            self.sizes = [1]
            return
        }
        let selector = data[0]
        self.stream = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
        switch selector % 4 {
        case 0: self.sizes = [Int.max]                                 // all at once
        case 1: self.sizes = [1]                                       // a byte at a time
        case 2: self.sizes = [Int(selector >> 2) + 1]                  // fixed 1...64
        default: self.sizes = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 7, 1, 300]  // ragged
        }
    }

    /// The same split from an input already in an array.
    public init(_ input: [UInt8]) {
        self = input.withUnsafeBufferPointer { Chunks($0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count) }
    }

    /// Calls `body` with consecutive pieces of the stream (copies, so the callee may write).
    public func forEach(_ body: (inout [UInt8]) -> Bool) {
        var offset = 0
        var i = 0
        while offset < self.stream.count {
            let n = min(self.sizes[i % self.sizes.count], self.stream.count - offset)
            var piece = Array(self.stream[offset..<offset + n])
            offset += n
            i += 1
            if !body(&piece) { return }
        }
    }
}

/// A failed check: the input breaks a documented promise. libFuzzer reports the crash.
public func require(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("fuzz oracle: " + message()) }
}

@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> Int32
) -> Int32

/// Runs libFuzzer's driver on `harness`. SwiftPM links an executable's entry point as
/// `<module>_main`, so each harness defines that and calls this instead of libFuzzer's own main.
public func runFuzzer(
    _ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ harness: @convention(c) (UnsafePointer<UInt8>, Int) -> Int32
) -> Int32 {
    var count = argc
    var vector = argv
    return LLVMFuzzerRunDriver(&count, &vector, harness)
}
