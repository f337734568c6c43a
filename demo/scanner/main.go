// Command scanner replaces the Django scanner behind the api_key gateway
// in Caddyfile.example, so that the gateway can be tried on one machine.
//
// POST /scanner/scan/ reads the request body and returns a JSON verdict
// with the body's length and the client name from X-Api-Client. Other
// methods on that path get 405, and every other path gets 404.
//
// Each request is logged with its method, path and X-Api-Client. The
// X-Api-Key header is logged only as present or absent, never its value,
// because the gateway should have removed it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// maxBodyBytes bounds the body read from one scan request.
const maxBodyBytes = 32 << 20

// verdict is the JSON body of a scan response.
type verdict struct {
	Verdict string `json:"verdict"`
	Bytes   int64  `json:"bytes"`
	Client  string `json:"client"`
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8001", "address to listen on, as host:port")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	mux := http.NewServeMux()
	mux.HandleFunc("POST /scanner/scan/{$}", scan)

	server := &http.Server{
		Addr:              *listen,
		Handler:           logRequests(logger, mux),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	serveErr := make(chan error, 1)
	go func() {
		logger.Info("scanner listening", "address", *listen)
		serveErr <- server.ListenAndServe()
	}()

	select {
	case err := <-serveErr:
		logger.Error("scanner stopped", "address", *listen, "error", err)
		os.Exit(1)
	case <-ctx.Done():
	}

	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := server.Shutdown(shutdownCtx); err != nil {
		logger.Error("scanner shutdown failed", "error", err)
		os.Exit(1)
	}
	logger.Info("scanner stopped", "address", *listen)
}

// scan counts the body's bytes and returns a clean verdict.
func scan(w http.ResponseWriter, r *http.Request) {
	length, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, "request body is larger than 32 MiB", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "reading request body failed", http.StatusBadRequest)
		return
	}

	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(verdict{
		Verdict: "clean",
		Bytes:   length,
		Client:  r.Header.Get("X-Api-Client"),
	})
}

// logRequests logs one line per request after next has handled it.
func logRequests(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		recorder := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(recorder, r)

		_, keyPresent := r.Header["X-Api-Key"]
		logger.Info("request",
			"method", r.Method,
			"path", r.URL.Path,
			"client", r.Header.Get("X-Api-Client"),
			"api_key_present", keyPresent,
			"status", recorder.status)
	})
}

// statusRecorder remembers the status code that a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}
