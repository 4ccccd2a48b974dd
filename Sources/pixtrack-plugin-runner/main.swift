// The process a gateway plugin runs in, started and supervised by pixtrackd (see
// Sources/PluginRuntime/PluginRunnerServer.swift). Not meant to be run by hand.
import Glibc
import PluginRuntime

exit(PluginRunnerServer.main(Array(CommandLine.arguments.dropFirst())))
