// swift-tools-version:6.2
import Foundation
import PackageDescription

/// ISA-L's igzip, a second permessage-deflate compressor (docs/benchmarks.md, "Compression
/// engines"): built in when libisal-dev's header is on this machine, unless PETREL_NO_ISAL=1.
/// Only its types come from the header; the library is opened at run time (Deflate/Isal.swift).
let withIsal = FileManager.default.fileExists(atPath: "/usr/include/isa-l/igzip_lib.h")
    && ProcessInfo.processInfo.environment["PETREL_NO_ISAL"] != "1"

let coreSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "Petrel",
    products: [
        .library(name: "PetrelCore", targets: ["PetrelCore"]),
        .library(name: "PetrelRuntime", targets: ["PetrelRuntime"]),
        .library(name: "Petrel", targets: ["Petrel"]),
        // libpetrel.so: the C ABI of include/petrel.h (`make lib` links the Swift runtime in statically).
        .library(name: "petrel", type: .dynamic, targets: ["PetrelC"]),
        .executable(name: "petrel-echo", targets: ["petrel-echo"]),
        .executable(name: "petrel-autobahn-client", targets: ["petrel-autobahn-client"]),
        .executable(name: "petrel-soak", targets: ["petrel-soak"]),
    ],
    targets: [
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CLinux"),
        .systemLibrary(name: "CIsal", providers: [.apt(["libisal-dev"])]),
        // hiredis, for the Redis Streams engine: linked statically (libpetrel.so gains no runtime
        // dependency, and its version script keeps hiredis's symbols private).
        .systemLibrary(name: "CHiredis", providers: [.apt(["libhiredis-dev"])]),
        .target(
            name: "PetrelCore",
            dependencies: ["CZlib", "COpenSSL", "CLinux"] + (withIsal ? ["CIsal"] : []),
            swiftSettings: coreSettings + (withIsal ? [.define("PETREL_ISAL")] : [])
        ),
        .target(
            name: "PetrelRuntime",
            dependencies: ["PetrelCore", "CLinux", "CHiredis"],
            swiftSettings: coreSettings,
            linkerSettings: [.unsafeFlags(["-Xlinker", "-l:libhiredis.a"])]
        ),
        .target(name: "Petrel", dependencies: ["PetrelRuntime"], swiftSettings: coreSettings),
        .systemLibrary(name: "CPetrelABI", path: "include"),
        .target(name: "PetrelC", dependencies: ["PetrelRuntime", "CPetrelABI", "CLinux"], swiftSettings: coreSettings),
        .testTarget(name: "PetrelTests", dependencies: ["Petrel"], swiftSettings: coreSettings),
        .executableTarget(name: "petrel-echo", dependencies: ["PetrelRuntime"]),
        .executableTarget(name: "petrel-autobahn-client", dependencies: ["PetrelRuntime"]),
        // Churn and soak: connect/handshake/close cycles while publishing; leaks checked after.
        .executableTarget(name: "petrel-soak", dependencies: ["PetrelRuntime"]),
        .testTarget(
            name: "PetrelRuntimeTests",
            // PetrelC too: one suite drives the same handshakes through the runtime and the C session.
            dependencies: ["PetrelRuntime", "PetrelC", "CPetrelABI"],
            swiftSettings: coreSettings
        ),
        .testTarget(
            name: "PetrelCoreTests",
            dependencies: ["PetrelCore"],
            swiftSettings: coreSettings
        ),
    ]
)

/// `make docs` builds the Swift API's reference with DocC through the swift-docc-plugin, which is a
/// dependency only when PETREL_DOCS=1 (in a build folder of its own): every other build resolves
/// and builds exactly what it did without it.
if ProcessInfo.processInfo.environment["PETREL_DOCS"] == "1" {
    package.dependencies.append(.package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"))
}
