// The pause image's only program (the sandbox container of every Pod on the node
// cluster): waits for SIGTERM/SIGINT and reaps orphaned children. No dependencies.
module github.com/origin-region-operator/tools/pause

go 1.26.0
