// Build-tool plugin: embeds the CUDA C sources of a target's Kernels/ folder into the binary
// as Swift string literals (EmbeddedKernels.swift), so NVRTC can compile them at run time.

import Foundation
import PackagePlugin

@main
struct EmbedKernels: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        // The target folder by convention (Target.directoryURL needs tools 6.1).
        let kernelDir = context.package.directoryURL.appendingPathComponent("Sources/\(target.name)/Kernels")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: kernelDir.path)) ?? []
        // Sorted so the generated file (and the kernel hashes) do not depend on directory order.
        let sources = names.filter { $0.hasSuffix(".cu") || $0.hasSuffix(".cuh") }.sorted()
            .map { kernelDir.appendingPathComponent($0) }
        let output = context.pluginWorkDirectoryURL.appendingPathComponent("EmbeddedKernels.swift")
        return [.buildCommand(
            displayName: "Embedding \(sources.count) CUDA kernel files into \(target.name)",
            executable: try context.tool(named: "EmbedKernelsTool").url,
            arguments: [output.path] + sources.map(\.path),
            inputFiles: sources,
            outputFiles: [output])]
    }
}
