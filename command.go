package apikey

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

// generatedKeyBytes is the number of random bytes in a generated key:
// 256 bits, written as 43 characters of unpadded URL-safe base64.
const generatedKeyBytes = 32

// maxHashInput bounds what "caddy api-key hash" reads from standard input.
const maxHashInput = 64 << 10

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "api-key",
		Usage: "generate [--client <name>] | hash [--client <name>]",
		Short: "Generates API keys and prints their digests for the api_key handler",
		Long: `
Creates keys for the api_key HTTP handler and prints the line to paste
into an api_key block. The config then holds only the key's SHA-256
digest, which cannot be used to call the service.

  caddy api-key generate [--client <name>]
      Prints a new random key (256 bits from the system's secure random
      source, as URL-safe base64) on the first line, and the matching
      "key <name> sha256:<digest>" line on the second.

  caddy api-key hash [--client <name>]
      Reads an existing key from standard input, without echo when it is
      a terminal, and prints its "key <name> sha256:<digest>" line. The
      key is never taken as an argument, which would leave it in the
      shell history and in the process list.

--client sets the client name in the printed line. Default: default.
`,
		CobraFunc: func(cmd *cobra.Command) {
			generate := &cobra.Command{
				Use:   "generate [--client <name>]",
				Short: "Prints a new random key and its digest line",
				Args: noArguments("generate takes no arguments; set the client name " +
					"with --client"),
				RunE: func(cmd *cobra.Command, _ []string) error {
					client, _ := cmd.Flags().GetString("client")
					return generateKey(rand.Reader, cmd.OutOrStdout(), client)
				},
			}
			hash := &cobra.Command{
				Use:   "hash [--client <name>]",
				Short: "Reads a key from standard input and prints its digest line",
				Args: noArguments("hash takes no arguments; pipe the key on standard " +
					"input, for example: caddy api-key hash < key.txt"),
				RunE: func(cmd *cobra.Command, _ []string) error {
					client, _ := cmd.Flags().GetString("client")
					key, err := readKey(cmd.InOrStdin(), cmd.ErrOrStderr())
					if err != nil {
						return err
					}
					return printDigestLine(cmd.OutOrStdout(), client, key)
				},
			}
			for _, sub := range []*cobra.Command{generate, hash} {
				sub.Flags().String("client", DefaultClient, "client name for the printed key line")
				cmd.AddCommand(sub)
			}
			// Cobra's flag errors repeat the flag, and a key that starts
			// with '-' would be taken for one.
			cmd.SetFlagErrorFunc(func(*cobra.Command, error) error {
				return errors.New("invalid flag (not shown, in case it is a key); " +
					"the only flag is --client; see 'caddy api-key --help'")
			})
			cmd.Args = noArguments("unknown api-key subcommand (not shown, in case it " +
				"is a key); use generate or hash")
			cmd.RunE = func(cmd *cobra.Command, _ []string) error {
				return cmd.Help()
			}
		},
	})
}

// noArguments returns a cobra argument check that fails with message
// whenever arguments are given. Unlike cobra.NoArgs, the message does not
// repeat the argument, which may be a key typed in the wrong place.
func noArguments(message string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) > 0 {
			return errors.New(message)
		}
		return nil
	}
}

// generateKey writes a new random key and its digest line to out.
func generateKey(random io.Reader, out io.Writer, client string) error {
	if err := checkClientName(client); err != nil {
		return fmt.Errorf("--client: %v", err)
	}

	raw := make([]byte, generatedKeyBytes)
	if _, err := io.ReadFull(random, raw); err != nil {
		return fmt.Errorf("reading random bytes: %v", err)
	}
	key := base64.RawURLEncoding.EncodeToString(raw)

	if _, err := fmt.Fprintln(out, key); err != nil {
		return err
	}
	return printDigestLine(out, client, key)
}

// readKey reads one key from in: everything up to the first newline, or to
// the end of the input. When in is a terminal, it prompts on prompt and
// reads without echo.
func readKey(in io.Reader, prompt io.Writer) (string, error) {
	if file, ok := in.(*os.File); ok && term.IsTerminal(int(file.Fd())) {
		fmt.Fprint(prompt, "API key: ")
		line, err := term.ReadPassword(int(file.Fd()))
		fmt.Fprintln(prompt)
		if err != nil {
			return "", fmt.Errorf("reading the key from the terminal: %v", err)
		}
		return string(line), nil
	}

	content, err := io.ReadAll(io.LimitReader(in, maxHashInput+1))
	if err != nil {
		return "", fmt.Errorf("reading the key from standard input: %v", err)
	}
	if len(content) > maxHashInput {
		return "", fmt.Errorf("standard input is longer than %d KiB; "+
			"pass only the key", maxHashInput>>10)
	}

	line, _, _ := bytes.Cut(content, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if rest := bytes.TrimSpace(content[len(line):]); len(rest) > 0 {
		return "", errors.New("standard input has more than one line; pass only the key")
	}
	return string(line), nil
}

// printDigestLine checks key as the api_key handler would and writes the
// "key <client> sha256:<digest>" line for it.
func printDigestLine(out io.Writer, client, key string) error {
	if err := checkClientName(client); err != nil {
		return fmt.Errorf("--client: %v", err)
	}
	if err := checkSecret(key); err != nil {
		return fmt.Errorf("key %v", err)
	}

	digest := sha256.Sum256([]byte(key))
	writer := bufio.NewWriter(out)
	fmt.Fprintf(writer, "key %s %s%s\n", client, digestPrefix, hex.EncodeToString(digest[:]))
	return writer.Flush()
}
