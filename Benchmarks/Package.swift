// swift-tools-version:6.2
// Petrel's benchmarks: a package of its own so that the library's build stays lean.
// `swift run -c release petrel-microbench` from this folder (or `make microbench` from the top).
import PackageDescription

let package = Package(
    name: "PetrelBenchmarks",
    dependencies: [.package(name: "Petrel", path: "..")],
    targets: [
        .executableTarget(
            name: "petrel-microbench",
            dependencies: [.product(name: "PetrelCore", package: "Petrel")],
            swiftSettings: [.unsafeFlags(["-Ounchecked"]) ]
        ),
        // ws:// next to wss://: handshakes per second and echo throughput.
        .executableTarget(
            name: "petrel-tls-bench",
            dependencies: [.product(name: "PetrelRuntime", package: "Petrel"), .product(name: "PetrelCore", package: "Petrel")]),

    ]
)
