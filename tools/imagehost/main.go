// imagehost does, with the containers/image library (go.podman.io/image/v5), the three things a
// Kinoite host or an operator of one does with image signatures: make a sigstore key pair, copy
// an image under a policy.json (so a sigstoreSigned policy verifies the signature exactly as
// rpm-ostree, bootc, podman and skopeo do), and sign while copying. Its flags are skopeo's.
//
// skopeo itself is not served by this project's Go module proxy, and Debian's skopeo has sigstore
// patched out, so the tests use this program instead: it calls the same library functions that
// `skopeo copy` and `skopeo generate-sigstore-key` call.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/directory"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/signature/sigstore"
	"go.podman.io/image/v5/types"
)

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: imagehost generate-sigstore-key|copy [flags] ..."))
	}
	var err error
	switch os.Args[1] {
	case "generate-sigstore-key":
		err = generateKey(os.Args[2:])
	case "copy":
		err = copyImage(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "imagehost:", err)
	os.Exit(1)
}

func readPassphrase(path string) ([]byte, error) {
	if path == "" {
		return []byte{}, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	// skopeo takes the first line of the file.
	return []byte(strings.SplitN(string(data), "\n", 2)[0]), nil
}

// generate-sigstore-key --output-prefix P [--passphrase-file F]: writes P.key and P.pub.
func generateKey(args []string) error {
	fs := flag.NewFlagSet("generate-sigstore-key", flag.ContinueOnError)
	prefix := fs.String("output-prefix", "", "write PREFIX.key and PREFIX.pub")
	passFile := fs.String("passphrase-file", "", "passphrase for the private key (empty when absent)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *prefix == "" {
		return errors.New("--output-prefix is required")
	}
	pass, err := readPassphrase(*passFile)
	if err != nil {
		return err
	}
	keys, err := sigstore.GenerateKeyPair(pass)
	if err != nil {
		return err
	}
	if err := os.WriteFile(*prefix+".key", keys.PrivateKey, 0o600); err != nil {
		return err
	}
	return os.WriteFile(*prefix+".pub", keys.PublicKey, 0o644)
}

func parseRef(name string) (types.ImageReference, error) {
	switch {
	case strings.HasPrefix(name, "docker://"):
		return docker.ParseReference(strings.TrimPrefix(name, "docker:"))
	case strings.HasPrefix(name, "dir:"):
		return directory.NewReference(strings.TrimPrefix(name, "dir:"))
	default:
		return nil, fmt.Errorf("%q: only docker:// and dir: references are supported", name)
	}
}

// copy [--policy F] [--registries.d D] [--src-tls-verify=false] [--dest-tls-verify=false]
// [--sign-by-sigstore-private-key K [--sign-passphrase-file F]] [--preserve-digests] SRC DST
func copyImage(args []string) error {
	fs := flag.NewFlagSet("copy", flag.ContinueOnError)
	policyPath := fs.String("policy", "", "policy.json to verify the source with (required)")
	registriesD := fs.String("registries.d", "", "registries.d directory")
	srcTLS := fs.Bool("src-tls-verify", true, "verify the source registry's TLS (false: plain HTTP allowed)")
	destTLS := fs.Bool("dest-tls-verify", true, "verify the destination registry's TLS (false: plain HTTP allowed)")
	signKey := fs.String("sign-by-sigstore-private-key", "", "sign the copied image with this sigstore private key")
	signPass := fs.String("sign-passphrase-file", "", "passphrase of the signing key (empty when absent)")
	preserve := fs.Bool("preserve-digests", false, "fail rather than change the manifest digest")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("copy needs SOURCE and DESTINATION")
	}
	if *policyPath == "" {
		return errors.New("--policy is required (a host always has one)")
	}
	policy, err := signature.NewPolicyFromFile(*policyPath)
	if err != nil {
		return err
	}
	pc, err := signature.NewPolicyContext(policy)
	if err != nil {
		return err
	}
	defer pc.Destroy()
	src, err := parseRef(fs.Arg(0))
	if err != nil {
		return err
	}
	dst, err := parseRef(fs.Arg(1))
	if err != nil {
		return err
	}
	opts := &copy.Options{
		SourceCtx:       systemContext(*registriesD, *srcTLS),
		DestinationCtx:  systemContext(*registriesD, *destTLS),
		PreserveDigests: *preserve,
		ReportWriter:    os.Stderr,
	}
	if *signKey != "" {
		pass, err := readPassphrase(*signPass)
		if err != nil {
			return err
		}
		opts.SignBySigstorePrivateKeyFile = *signKey
		opts.SignSigstorePrivateKeyPassphrase = pass
	}
	_, err = copy.Image(context.Background(), pc, dst, src, opts)
	return err
}

func systemContext(registriesD string, tlsVerify bool) *types.SystemContext {
	ctx := &types.SystemContext{RegistriesDirPath: registriesD}
	if !tlsVerify {
		ctx.DockerInsecureSkipTLSVerify = types.OptionalBoolTrue
	}
	return ctx
}
