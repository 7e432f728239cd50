// The frame and message parser as a server (masked frames in, permessage-deflate agreed), fed
// in every split. Oracle: messages are within the limits and text is valid UTF-8; a failure
// carries 1002, 1007 or 1009; parsing always makes progress; output stays proportional.
import FuzzSupport
import PetrelCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    runFrames(data, size, role: .server)
}

@_cdecl("fuzz_frames_server_main")
public func harnessMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzz)
}
