// Package backup owns replicant's backups in a bucket: where they live
// (<prefix>/<namespace>/<sts>/<UTC timestamp>/ in any bucket gocloud.dev opens: s3://,
// gs://, azblob://, file://), taking one (a sidecar's /xbackup stream, zstd-compressed
// and uploaded, then committed by writing its manifest last), listing the committed
// ones, retention, and reading one back for a restore with its checksum verified.
package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"sort"
	"strings"
	"time"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob" // azblob://
	_ "gocloud.dev/blob/fileblob"  // file://
	_ "gocloud.dev/blob/gcsblob"   // gs://
	_ "gocloud.dev/blob/s3blob"    // s3://
	"gocloud.dev/gcerrors"

	"github.com/replicant-dev/replicant/sidecar"
)

// Schemes are the bucket kinds a backup URI may name.
var Schemes = []string{"s3", "gs", "azblob", "file"}

// Object names inside one backup's directory. The manifest is written last: a
// directory without one is an unfinished backup, never listed nor restored.
const (
	DataObject = "backup.xbstream.zst"
	// TarDataObject holds a MySQL backup: a tar archive of a CLONE LOCAL copy.
	TarDataObject  = "backup.tar.zst"
	ManifestObject = "manifest.json"
	// Latest, as the last element of an init-uri, names the newest committed backup.
	Latest = "latest"
	// nameLayout is a backup's name: its start, UTC, sortable as text.
	nameLayout = "20060102T150405Z"
)

// Manifest describes one committed backup.
type Manifest struct {
	Name        string `json:"name"`
	Namespace   string `json:"namespace"`
	StatefulSet string `json:"statefulSet"`
	// Source is the sidecar the backup was streamed from.
	Source        string `json:"source"`
	Flavor        string `json:"flavor"`
	ServerVersion string `json:"serverVersion"`
	// Format is the data's: xbstream (mariadb-backup) or tar (a MySQL CLONE LOCAL
	// copy); manifests without it are xbstream.
	Format string `json:"format,omitempty"`
	// GTID is the position the backup ends at: a restored server replicates, or
	// replays binlogs, from there.
	GTID        string `json:"gtid"`
	Compression string `json:"compression"`
	// StreamBytes is the xbstream's size, StoredBytes the compressed object's, and
	// SHA256 the stored object's checksum, verified on restore.
	StreamBytes int64     `json:"streamBytes"`
	StoredBytes int64     `json:"storedBytes"`
	SHA256      string    `json:"sha256"`
	Start       time.Time `json:"start"`
	End         time.Time `json:"end"`
}

// DataObject is the name of the backup's data object in its directory.
func (m Manifest) DataObject() string {
	if m.Format == sidecar.FormatTar {
		return TarDataObject
	}
	return DataObject
}

// Location is a parsed backup URI: the bucket and a path inside it.
type Location struct {
	scheme, host, rawQuery string
	path                   string // no leading or trailing slash
}

// String is the URI as it may be shown: no user information, no query.
func (l Location) String() string {
	if l.scheme == "file" {
		return "file:///" + l.path
	}
	return strings.TrimRight(l.scheme+"://"+l.host+"/"+l.path, "/")
}

// ParseURI reads a bucket URI: s3://bucket/prefix?region=…&endpoint=…,
// gs://bucket/prefix, azblob://container/prefix, file:///directory.
func ParseURI(uri string) (Location, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return Location{}, fmt.Errorf("%q is not a URI", redactRaw(uri))
	}
	l := Location{scheme: u.Scheme, host: u.Host, rawQuery: u.RawQuery, path: strings.Trim(path.Clean("/"+u.Path), "/")}
	known := false
	for _, s := range Schemes {
		known = known || u.Scheme == s
	}
	switch {
	case !known:
		return Location{}, fmt.Errorf("%s: the scheme must be one of %s", l, strings.Join(Schemes, ", "))
	case u.Scheme == "file" && (u.Host != "" || l.path == ""):
		return Location{}, fmt.Errorf("%s: a file URI names an absolute directory (file:///backups)", redactRaw(uri))
	case u.Scheme != "file" && u.Host == "":
		return Location{}, fmt.Errorf("%s: no bucket named", l)
	}
	return l, nil
}

// redactRaw hides what could be a secret in a URI that does not parse.
func redactRaw(uri string) string {
	if i := strings.IndexAny(uri, "?@"); i >= 0 {
		return uri[:i] + "…"
	}
	return uri
}

// Child is the location of a path below l.
func (l Location) Child(elems ...string) Location {
	l.path = strings.Trim(path.Join(append([]string{l.path}, elems...)...), "/")
	return l
}

// Parent splits off the last path element (an init-uri's backup name).
func (l Location) Parent() (Location, string) {
	dir, name := path.Split(l.path)
	l.path = strings.Trim(dir, "/")
	return l, name
}

// open opens the bucket with the path as its root.
func (l Location) open(ctx context.Context) (*blob.Bucket, error) {
	if l.scheme == "file" {
		// create_dir: the directory is made on first use; no_tmp_dir: each object is
		// written beside its final name, so a rename commits it.
		u := url.URL{Scheme: "file", Path: "/" + l.path, RawQuery: "create_dir=true&no_tmp_dir=true"}
		return blob.OpenBucket(ctx, u.String())
	}
	b, err := blob.OpenBucket(ctx, (&url.URL{Scheme: l.scheme, Host: l.host, RawQuery: l.rawQuery}).String())
	if err != nil || l.path == "" {
		return b, err
	}
	return blob.PrefixedBucket(b, l.path+"/"), nil
}

// Cluster is one cluster's directory of backups in a bucket.
type Cluster struct {
	bucket *blob.Bucket
	where  Location
}

// OpenCluster opens the directory of the backups of namespace/sts under the backup
// URI (replicant.dev/backup-uri).
func OpenCluster(ctx context.Context, backupURI, namespace, sts string) (*Cluster, error) {
	loc, err := ParseURI(backupURI)
	if err != nil {
		return nil, err
	}
	return Open(ctx, loc.Child(namespace, sts))
}

// Open opens the backups directory at loc.
func Open(ctx context.Context, loc Location) (*Cluster, error) {
	b, err := loc.open(ctx)
	if err != nil {
		return nil, fmt.Errorf("open %s: %s", loc, cleanError(err))
	}
	return &Cluster{bucket: b, where: loc}, nil
}

// Close releases the bucket.
func (c *Cluster) Close() error { return c.bucket.Close() }

// Where is the directory's URI, without secrets.
func (c *Cluster) Where() string { return c.where.String() }

// cleanError keeps an SDK's error to its message: the error code and what the
// service said, never a request's signed URL or headers.
func cleanError(err error) string {
	msg := err.Error()
	if code := gcerrors.Code(err); code != gcerrors.Unknown && code != gcerrors.OK {
		msg = fmt.Sprintf("%v: %s", code, msg)
	}
	if i := strings.Index(msg, "X-Amz-"); i >= 0 { // a presigned URL in a message
		msg = msg[:i] + "…"
	}
	return msg
}

// List returns the committed backups, oldest first. Directories without a manifest
// (a backup being written, or one that failed) are not listed.
func (c *Cluster) List(ctx context.Context) ([]Manifest, error) {
	var out []Manifest
	it := c.bucket.List(&blob.ListOptions{Delimiter: "/"})
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("list %s: %s", c.where, cleanError(err))
		}
		if !obj.IsDir {
			continue
		}
		name := strings.TrimSuffix(obj.Key, "/")
		m, err := c.manifest(ctx, name)
		if gcerrors.Code(err) == gcerrors.NotFound {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (c *Cluster) manifest(ctx context.Context, name string) (Manifest, error) {
	data, err := c.bucket.ReadAll(ctx, name+"/"+ManifestObject)
	if err != nil {
		return Manifest{}, err
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return Manifest{}, fmt.Errorf("%s: its manifest is not readable: %w", c.where.Child(name, ManifestObject), err)
	}
	return m, nil
}

// ErrNoBackup: the directory holds no committed backup of that name.
var ErrNoBackup = errors.New("no committed backup")

// Find returns the committed backup called name, or the newest for Latest.
func (c *Cluster) Find(ctx context.Context, name string) (Manifest, error) {
	if name == Latest || name == "" {
		all, err := c.List(ctx)
		if err != nil {
			return Manifest{}, err
		}
		if len(all) == 0 {
			return Manifest{}, fmt.Errorf("%s: %w", c.where, ErrNoBackup)
		}
		return all[len(all)-1], nil
	}
	m, err := c.manifest(ctx, name)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return Manifest{}, fmt.Errorf("%s: %w called %s (an unfinished one has no manifest)", c.where, ErrNoBackup, name)
	}
	if err != nil {
		return Manifest{}, fmt.Errorf("%s: %s", c.where.Child(name), cleanError(err))
	}
	return m, nil
}

// sha256Hex is the checksum's text form.
func sha256Hex(sum []byte) string { return hex.EncodeToString(sum) }

var _ = sha256.New
