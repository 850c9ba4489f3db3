// Command etcd is the real etcd server (go.etcd.io/etcd/server/v3, version
// pinned in ../../go.mod), built from Go modules for the karpctl test bed.
// It only forwards to etcdmain, exactly like upstream's own main package.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
