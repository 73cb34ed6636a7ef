package sshd

import (
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"

	"github.com/pkg/sftp"
)

// confinedFS serves sftp inside one folder: every client path is taken
// relative to it, ".." cannot leave it, and no links can be made.
type confinedFS struct{ root string }

func confinedHandlers(root string) sftp.Handlers {
	fs := confinedFS{root: root}
	return sftp.Handlers{FileGet: fs, FilePut: fs, FileCmd: fs, FileList: fs}
}

func (fs confinedFS) path(p string) string {
	return filepath.Join(fs.root, filepath.FromSlash(path.Clean("/"+p)))
}

func (fs confinedFS) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	return os.Open(fs.path(r.Filepath))
}

func (fs confinedFS) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	flags := os.O_WRONLY | os.O_CREATE
	if pf := r.Pflags(); pf.Trunc {
		flags |= os.O_TRUNC
	}
	return os.OpenFile(fs.path(r.Filepath), flags, 0o600)
}

func (fs confinedFS) Filecmd(r *sftp.Request) error {
	p := fs.path(r.Filepath)
	switch r.Method {
	case "Setstat":
		return nil
	case "Rename", "PosixRename":
		return os.Rename(p, fs.path(r.Target))
	case "Rmdir", "Remove":
		return os.Remove(p)
	case "Mkdir":
		return os.Mkdir(p, 0o700)
	case "Link", "Symlink":
		return errors.New("links cannot be made in roostd's staging folder")
	}
	return sftp.ErrSSHFxOpUnsupported
}

type listerAt []os.FileInfo

func (l listerAt) ListAt(out []os.FileInfo, off int64) (int, error) {
	if off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(out, l[off:])
	if n < len(out) {
		return n, io.EOF
	}
	return n, nil
}

func (fs confinedFS) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	p := fs.path(r.Filepath)
	switch r.Method {
	case "List":
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, err
		}
		var infos listerAt
		for _, e := range entries {
			if fi, err := e.Info(); err == nil {
				infos = append(infos, fi)
			}
		}
		return infos, nil
	case "Stat", "Lstat":
		fi, err := os.Lstat(p)
		if err != nil {
			return nil, err
		}
		return listerAt{fi}, nil
	}
	return nil, sftp.ErrSSHFxOpUnsupported
}
