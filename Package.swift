// swift-tools-version:6.0
import PackageDescription

let fast: [SwiftSetting] = [
    .unsafeFlags(["-wmo"], .when(configuration: .release)),
]

let package = Package(
    name: "aetrain",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "aetrain", targets: ["aetrain"]),
        .library(name: "AutoencoderCore", targets: ["AutoencoderCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // --config FILE in TOML (JSON needs nothing): TOMLKit wraps toml++; adds about 35 s to a cold build.
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
    ],
    targets: [
        // System libraries (Debian: libdnnl-dev, libopenblas-dev, zlib1g-dev, libopenmpi-dev, libssl-dev).
        // oneDNN does all the training compute; OpenBLAS is left with LAPACK (the PCA baseline).
        .systemLibrary(name: "CDNNL", providers: [.apt(["libdnnl-dev"])]),  // Debian ships no .pc file
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        // Element-wise kernels, vectorised by clang (libmvec for expf/log1pf), dispatched per CPU,
        // and the oneDNN primitives of the layers (dnnl_ops.c).
        .target(name: "CKernels", dependencies: ["CDNNL"],
                cSettings: [.unsafeFlags(["-O3", "-fno-math-errno", "-fveclib=libmvec"])],
                linkerSettings: [.linkedLibrary("dnnl"), .linkedLibrary("mvec"), .linkedLibrary("m")]),
        .target(name: "AutoencoderCore",
                dependencies: ["CBLAS", "CZlib", "CMPI", "COpenSSL", "CKernels", "CDNNL",
                               .product(name: "TOMLKit", package: "TOMLKit")],
                swiftSettings: fast),
        .executableTarget(name: "aetrain",
                          dependencies: ["AutoencoderCore",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          swiftSettings: fast),
        // NaN- and length-aware comparisons shared by both test targets.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "AutoencoderCoreTests", dependencies: ["AutoencoderCore", "TestSupport"]),
        .testTarget(name: "aetrainTests", dependencies: ["AutoencoderCore", "aetrain", "TestSupport"]),
    ],
    swiftLanguageModes: [.v5]
)
