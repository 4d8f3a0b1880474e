// swift-tools-version:6.0
// llm.swift: GPT-2 training from scratch in Swift, on the CPU and on NVIDIA GPUs.
// Speed flags live in the build command (-Xcc -march=native), not here; see README.md.
import PackageDescription

let package = Package(
    name: "llm-swift",
    products: [
        .executable(name: "llm", targets: ["llm"]),
        .library(name: "LLM", targets: ["LLM"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // The core, no backend: config, layouts, file formats, tokenizer, data, the training loop.
        .target(name: "LLM", swiftSettings: [.swiftLanguageMode(.v5)]),
        // What the build's -Xcc flags let the compiler assume of the CPU (fused multiply-add).
        .target(name: "CPUFeatures"),
        // CPU backend: fp32 layers in forward/backward pairs.
        .target(name: "LLMCPU", dependencies: ["LLM", "CPUFeatures"], swiftSettings: [.swiftLanguageMode(.v5), .unsafeFlags(["-O"], .when(configuration: .debug))]),
        // CUDA backend: driver API, NVRTC and cuBLASLt through dlopen; kernels embedded at build time.
        .target(name: "LLMCUDA", dependencies: ["LLM"], exclude: ["Kernels"],
                swiftSettings: [.swiftLanguageMode(.v5)], plugins: ["EmbedKernels"]),
        // Embeds LLMCUDA/Kernels/*.cu into the binary as Swift string literals.
        .plugin(name: "EmbedKernels", capability: .buildTool(), dependencies: ["EmbedKernelsTool"]),
        .executableTarget(name: "EmbedKernelsTool", path: "Plugins/EmbedKernelsTool"),
        .executableTarget(
            name: "llm",
            dependencies: ["LLM", "LLMCPU", "LLMCUDA",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(name: "LLMTests", dependencies: ["LLM"],
                    swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(name: "LLMCPUTests", dependencies: ["LLM", "LLMCPU"],
                    swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(name: "LLMCUDATests", dependencies: ["LLM", "LLMCUDA"],
                    swiftSettings: [.swiftLanguageMode(.v5)]),
        // The command line's flags: defaults, range checks and help (parsing only, nothing runs).
        .testTarget(name: "llmTests", dependencies: ["llm"],
                    swiftSettings: [.swiftLanguageMode(.v5)]),
    ]
)
