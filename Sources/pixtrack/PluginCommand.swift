import ArgumentParser

/// `pixtrack plugin …`: gateway plugin tools.
struct PluginCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugin",
        abstract: "Gateway plugin tools.",
        subcommands: [PluginCheckCommand.self, PluginBenchCommand.self])
}
