// Command switchboard-grpc-gateway: grpc-gateway v1 generated from Switchboard's protos, the
// peer the benchmarks compare the Python gateway with. Flags: --backend HOST:PORT (the gRPC
// service), --listen HOST:PORT (port 0 picks one). Prints "listening on http://HOST:PORT"
// once bound. JSON output: camelCase names, unpopulated fields printed (as the gateway does).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"

	"github.com/grpc-ecosystem/grpc-gateway/runtime"
	"google.golang.org/grpc"

	sb "switchboard/gen/switchboard/v1"
)

func main() {
	backend := flag.String("backend", "", "gRPC service HOST:PORT")
	listen := flag.String("listen", "127.0.0.1:0", "HTTP HOST:PORT")
	flag.Parse()
	if *backend == "" {
		fmt.Fprintln(os.Stderr, "switchboard-grpc-gateway: --backend HOST:PORT is required")
		os.Exit(2)
	}
	ctx := context.Background()
	marshaler := &runtime.JSONPb{OrigName: false, EmitDefaults: true}
	mux := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, marshaler))
	opts := []grpc.DialOption{grpc.WithInsecure()}
	if err := sb.RegisterRoomServiceHandlerFromEndpoint(ctx, mux, *backend, opts); err != nil {
		log.Fatalf("switchboard-grpc-gateway: RoomService: %v", err)
	}
	if err := sb.RegisterChatServiceHandlerFromEndpoint(ctx, mux, *backend, opts); err != nil {
		log.Fatalf("switchboard-grpc-gateway: ChatService: %v", err)
	}
	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("switchboard-grpc-gateway: cannot listen on %s: %v", *listen, err)
	}
	fmt.Printf("listening on http://%s\n", listener.Addr())
	log.Fatal(http.Serve(listener, mux))
}
