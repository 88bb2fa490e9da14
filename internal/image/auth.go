package image

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
)

// authFiles reads credentials from podman's and docker's auth files, in
// podman's order; the first file with an entry for the registry wins.
type authFiles struct{}

func authFilePaths() []string {
	var paths []string
	if p := os.Getenv("REGISTRY_AUTH_FILE"); p != "" {
		paths = append(paths, p)
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		paths = append(paths, filepath.Join(d, "containers", "auth.json"))
	}
	home, _ := os.UserHomeDir()
	cfg := os.Getenv("XDG_CONFIG_HOME")
	if cfg == "" && home != "" {
		cfg = filepath.Join(home, ".config")
	}
	if cfg != "" {
		paths = append(paths, filepath.Join(cfg, "containers", "auth.json"))
	}
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		paths = append(paths, filepath.Join(d, "config.json"))
	} else if home != "" {
		paths = append(paths, filepath.Join(home, ".docker", "config.json"))
	}
	return paths
}

type authEntry struct {
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
}

// Resolve implements authn.Keychain.
func (authFiles) Resolve(target authn.Resource) (authn.Authenticator, error) {
	keys := authKeys(target.String(), target.RegistryStr())
	for _, p := range authFilePaths() {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var f struct {
			Auths map[string]authEntry `json:"auths"`
		}
		if json.Unmarshal(b, &f) != nil {
			continue
		}
		norm := map[string]authEntry{}
		for k, e := range f.Auths {
			norm[normalizeAuthKey(k)] = e
		}
		for _, k := range keys {
			e, ok := norm[k]
			if !ok {
				continue
			}
			cfg := authn.AuthConfig{Username: e.Username, Password: e.Password, IdentityToken: e.IdentityToken}
			if e.Auth != "" {
				if dec, err := base64.StdEncoding.DecodeString(e.Auth); err == nil {
					if u, pw, ok := strings.Cut(string(dec), ":"); ok {
						cfg.Username, cfg.Password = u, pw
					}
				}
			}
			if cfg != (authn.AuthConfig{}) {
				return authn.FromConfig(cfg), nil
			}
		}
	}
	return authn.Anonymous, nil
}

// authKeys lists the auth file keys that may hold credentials for repo
// (host/path), most specific first, as podman looks them up.
func authKeys(repo, registry string) []string {
	registry = dockerHubAlias(registry)
	if r, ok := strings.CutPrefix(repo, "index.docker.io/"); ok {
		repo = "docker.io/" + r
	}
	var keys []string
	for p := repo; strings.Contains(p, "/"); p = p[:strings.LastIndex(p, "/")] {
		keys = append(keys, p)
	}
	return append(keys, registry)
}

// normalizeAuthKey turns legacy keys ("https://index.docker.io/v1/") into
// host[/path] form.
func normalizeAuthKey(k string) string {
	if _, rest, ok := strings.Cut(k, "://"); ok {
		k, _, _ = strings.Cut(rest, "/")
	}
	k = strings.TrimSuffix(k, "/")
	host, path, _ := strings.Cut(k, "/")
	host = dockerHubAlias(host)
	if path != "" {
		return host + "/" + path
	}
	return host
}

func dockerHubAlias(host string) string {
	switch host {
	case "index.docker.io", "registry-1.docker.io":
		return "docker.io"
	}
	return host
}
