// Command pause is the local cluster's pod sandbox process: it holds the pod's
// namespaces and exits on SIGTERM or SIGINT. Test infrastructure (no image can be
// pulled on the development machines); the image is built by test/cluster/images.sh.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
