// The test node's sandbox image binary (standard library only).
module trainyard.local/e2e/node/pause

go 1.26.0
