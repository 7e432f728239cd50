// swift-tools-version:6.2
// libFuzzer harnesses over every parser that sees bytes from the network. Build and run with
// Fuzz/run.sh (it passes -sanitize=fuzzer,address); each target is one harness.
import PackageDescription

let harnesses = [
    "fuzz-server-handshake", "fuzz-client-handshake", "fuzz-extensions", "fuzz-frames-server",
    "fuzz-frames-client", "fuzz-inflate", "fuzz-http", "fuzz-proxy-socks5", "fuzz-proxy-connect", "fuzz-request-body",
    "fuzz-engine", "fuzz-stomp", "fuzz-client-address",
]

let package = Package(
    name: "PetrelFuzz",
    dependencies: [.package(name: "Petrel", path: "..")],
    targets: [
        .target(name: "FuzzSupport", dependencies: [.product(name: "PetrelCore", package: "Petrel")])
    ] + harnesses.map { name in
        .executableTarget(
            name: name,
            dependencies: [
                "FuzzSupport", .product(name: "PetrelCore", package: "Petrel"), .product(name: "PetrelRuntime", package: "Petrel"),
            ],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])])
    }
)
