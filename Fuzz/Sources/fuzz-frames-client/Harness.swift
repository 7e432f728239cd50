// The frame parser as a client (unmasked frames in), in every split. Same oracle as the server's.
import FuzzSupport
import PetrelCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    runFrames(data, size, role: .client)
}

@_cdecl("fuzz_frames_client_main")
public func harnessMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzz)
}
