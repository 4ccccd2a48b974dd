// The process a gateway plugin runs in, started and supervised by pixtrackd (see
// Sources/PluginHost/PluginRunnerServer.swift). Not meant to be run by hand.
import Glibc
import PluginHost

exit(PluginRunnerServer.main(Array(CommandLine.arguments.dropFirst())))
