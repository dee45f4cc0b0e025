"""Headless OpenGL rasterisation of textured meshes (moderngl on EGL) for making training data.

One :class:`MeshRenderer` owns one GL context; make one per process (the parallel jobs do so in their worker
initialiser). It renders RGBA with exact alpha and camera-space depth:

* the framebuffer is cleared to transparent black and every covered sample writes alpha 1, so after the
  multisample resolve the colour is premultiplied by the pixel's coverage and alpha is that coverage;
  dividing by alpha gives straight colour, whose composite on white is exactly the resolved render on white;
* the depth attachment (made only when depth is asked for: its resolve costs ~2 ms a view on llvmpipe) holds
  camera z; the resolve averages it with the background's 0, so it is divided by the same coverage;
* lighting is computed per vertex (see the vertex shader) because llvmpipe shades every sample.

Cameras are this package's OpenCV cameras; :func:`diffusiongs.geometry.camera.gl_clip_from_camera` maps them to
clip space so that the read-back image starts at its top row. Lighting is fixed in the world (not to the camera),
so a surface point's diffuse colour is the same in every view, as multi-view supervision needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

import numpy as np
import torch
from jaxtyping import Float, UInt8, UInt32

from diffusiongs.geometry.camera import Cameras, gl_clip_from_camera

Pattern = Literal["none", "stripes", "checker", "dots", "noise", "marble", "rings", "gradient"]
PATTERN_IDS: dict[str, int] = {name: i for i, name in enumerate(get_args(Pattern))}
MAX_LIGHTS = 4


@dataclass(frozen=True)
class Material:
    """How a mesh part is shaded.

    The albedo is ``mix(color, color2, pattern(p)) * vertex colour * texture(uv)``; ``p`` is the part's pattern
    coordinate (a solid texture, so patterns need no UVs and agree across views).
    """

    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Base colour in [0, 1] (a material's base colour factor for real meshes)."""
    color2: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Second colour of procedural patterns."""
    pattern: Pattern = "none"
    """Procedural pattern mixing ``color`` and ``color2``."""
    frequency: float = 4.0
    """Pattern repetitions per unit of pattern coordinate."""
    specular: float = 0.0
    """Strength of the white Blinn-Phong highlight (0 = matte)."""
    shininess: float = 32.0
    """Blinn-Phong exponent."""
    alpha_cutoff: float | None = None
    """Fragments whose alpha is below this are discarded (glTF MASK); None renders every fragment opaque."""


@dataclass(frozen=True)
class MeshPart:
    """One draw call: triangles with one material (and texture).

    Attributes:
        positions: world positions, float32 ``[n, 3]``.
        normals: unit normals, float32 ``[n, 3]`` (lighting is two-sided).
        faces: vertex indices, uint32 ``[f, 3]``.
        colors: vertex colours RGBA in [0, 1], float32 ``[n, 4]``.
        uvs: texture coordinates with v up (OBJ / trimesh convention), float32 ``[n, 2]``.
        pattern_coords: coordinates for procedural patterns, float32 ``[n, 3]``.
        texture: base colour texture, uint8 ``[h, w, 4]``, top row first.
    """

    positions: Float[np.ndarray, "n 3"]
    normals: Float[np.ndarray, "n 3"]
    faces: UInt32[np.ndarray, "f 3"]
    colors: Float[np.ndarray, "n 4"]
    material: Material = field(default_factory=Material)
    uvs: Float[np.ndarray, "n 2"] | None = None
    pattern_coords: Float[np.ndarray, "n 3"] | None = None
    texture: UInt8[np.ndarray, "h w 4"] | None = None

    def transformed(self, linear: Float[np.ndarray, "3 3"], offset: Float[np.ndarray, " 3"]) -> MeshPart:
        """The part under ``x -> linear x + offset`` (normals by the inverse transpose)."""
        normals = self.normals @ np.linalg.inv(linear)
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        return replace(self, positions=(self.positions @ linear.T + offset).astype(np.float32),
                       normals=normals.astype(np.float32))


@dataclass(frozen=True)
class RenderMesh:
    """A mesh as a list of parts, in world coordinates."""

    parts: tuple[MeshPart, ...]

    @property
    def num_faces(self) -> int:
        return sum(len(p.faces) for p in self.parts)

    def bounds(self) -> Float[np.ndarray, "2 3"]:
        """Axis-aligned bounding box ``[min, max]``."""
        lo = np.min([p.positions.min(0) for p in self.parts], axis=0)
        hi = np.max([p.positions.max(0) for p in self.parts], axis=0)
        return np.stack([lo, hi])

    def transformed(self, linear: Float[np.ndarray, "3 3"], offset: Float[np.ndarray, " 3"]) -> RenderMesh:
        return RenderMesh(tuple(p.transformed(linear, offset) for p in self.parts))

    def normalized(self) -> RenderMesh:
        """Centred and scaled into [-1, 1]^3: the bounding box's centre at the origin and its largest half-extent 1
        (the paper's "center and scale each 3D object into [-1, 1]^3")."""
        lo, hi = self.bounds()
        half = float((hi - lo).max()) / 2
        if not np.isfinite(half) or half <= 0:
            raise ValueError("mesh has a degenerate or non-finite bounding box")
        return self.transformed(np.eye(3) / half, -(lo + hi) / 2 / half)


@dataclass(frozen=True)
class Lighting:
    """World-fixed lighting: a sky/ground hemisphere (z up) plus directional lights."""

    sky: tuple[float, float, float] = (0.50, 0.50, 0.52)
    """Ambient light from above (normals along +z)."""
    ground: tuple[float, float, float] = (0.24, 0.23, 0.22)
    """Ambient light from below (normals along -z)."""
    directions: tuple[tuple[float, float, float], ...] = ((0.45, -0.55, 0.70), (-0.70, 0.45, 0.30),
                                                          (0.20, 0.80, -0.20))
    """Directions *towards* the lights (need not be unit; at most MAX_LIGHTS)."""
    colors: tuple[tuple[float, float, float], ...] = ((0.50, 0.49, 0.46), (0.22, 0.23, 0.25), (0.12, 0.12, 0.12))
    """Light intensities, one per direction."""


@dataclass(frozen=True)
class RasterConfig:
    """Rasteriser settings."""

    samples: int = 4
    """MSAA samples per pixel (alpha is coverage in steps of 1/samples; llvmpipe supports up to 4)."""
    near: float = 0.05
    """Near clipping distance (camera z)."""
    far: float = 100.0
    """Far clipping distance (camera z)."""
    max_texture_size: int = 2048
    """Larger textures are downsampled to this many pixels per side before upload (saves upload time and memory;
    a 256^2 view cannot show more detail)."""


@dataclass(frozen=True)
class RenderOutput:
    """Rendered views.

    Attributes:
        rgba: straight-alpha colour and coverage, uint8 ``[view, h, w, 4]``.
        depth: camera z, 0 where nothing was hit, float32 ``[view, h, w]`` (None unless asked for).
    """

    rgba: UInt8[np.ndarray, "view h w 4"]
    depth: Float[np.ndarray, "view h w"] | None


_VERTEX_SHADER = """
#version 330
uniform mat4 u_world_to_clip;
uniform vec3 u_eye;
uniform vec3 u_camera_forward;
uniform vec3 u_sky;
uniform vec3 u_ground;
uniform int u_num_lights;
uniform vec3 u_light_dir[4];
uniform vec3 u_light_rgb[4];
uniform float u_shininess;
in vec3 in_position;
in vec3 in_normal;
in vec4 in_color;
in vec2 in_uv;
in vec3 in_pattern;
out vec4 v_color;
out vec2 v_uv;
out vec3 v_pattern;
out vec3 v_light;
out vec3 v_highlight;
out float v_depth;
// Lighting per vertex (Gouraud): llvmpipe shades every MSAA sample, which makes per-pixel lighting expensive.
// Diffuse light varies slowly over the dense meshes rendered here.
void main() {
    vec3 n = normalize(in_normal);
    vec3 to_eye = normalize(u_eye - in_position);
    if (dot(n, to_eye) < 0.0) n = -n;  // two-sided: meshes in the wild have inconsistent winding
    vec3 light = mix(u_ground, u_sky, 0.5 + 0.5 * n.z);
    vec3 highlight = vec3(0.0);
    for (int k = 0; k < u_num_lights; k++) {
        vec3 l = normalize(u_light_dir[k]);
        light += u_light_rgb[k] * max(dot(n, l), 0.0);
        highlight += u_light_rgb[k] * pow(max(dot(n, normalize(l + to_eye)), 0.0), u_shininess);
    }
    v_light = light;
    v_highlight = highlight;
    v_color = in_color;
    v_uv = in_uv;
    v_pattern = in_pattern;
    v_depth = dot(in_position - u_eye, u_camera_forward);  // camera z, affine in position: interpolates exactly
    gl_Position = u_world_to_clip * vec4(in_position, 1.0);
}
"""

_FRAGMENT_SHADER = """
#version 330
uniform vec3 u_color;
uniform vec3 u_color2;
uniform int u_pattern;
uniform float u_frequency;
uniform float u_specular;
uniform float u_alpha_cutoff;
uniform sampler2D u_texture;
in vec4 v_color;
in vec2 v_uv;
in vec3 v_pattern;
in vec3 v_light;
in vec3 v_highlight;
in float v_depth;
layout(location = 0) out vec4 out_color;
layout(location = 1) out float out_depth;

// Value noise from a cheap integer-lattice hash; fbm sums four octaves. Only needs to look irregular.
float lattice(vec3 c) {
    c = fract(c * vec3(0.1031, 0.1030, 0.0973));
    c += dot(c, c.yxz + 33.33);
    return fract((c.x + c.y) * c.z);
}
float value_noise(vec3 p) {
    vec3 i = floor(p);
    vec3 f = fract(p);
    f = f * f * (3.0 - 2.0 * f);
    float x00 = mix(lattice(i), lattice(i + vec3(1, 0, 0)), f.x);
    float x10 = mix(lattice(i + vec3(0, 1, 0)), lattice(i + vec3(1, 1, 0)), f.x);
    float x01 = mix(lattice(i + vec3(0, 0, 1)), lattice(i + vec3(1, 0, 1)), f.x);
    float x11 = mix(lattice(i + vec3(0, 1, 1)), lattice(i + vec3(1, 1, 1)), f.x);
    return mix(mix(x00, x10, f.y), mix(x01, x11, f.y), f.z);
}
float fbm(vec3 p) {
    float sum = 0.0;
    float amplitude = 0.5;
    for (int k = 0; k < 4; k++) {
        sum += amplitude * value_noise(p);
        p = p * 2.03 + 17.0;
        amplitude *= 0.5;
    }
    return sum / 0.9375;
}
// Weight of color2 in [0, 1] for the part's pattern (ids follow gl.PATTERN_IDS).
float pattern_weight(vec3 p) {
    vec3 q = p * u_frequency;
    if (u_pattern == 1) return smoothstep(0.4, 0.6, abs(fract(q.z) * 2.0 - 1.0));
    if (u_pattern == 2) return mod(floor(q.x) + floor(q.y) + floor(q.z), 2.0);
    if (u_pattern == 3) return 1.0 - smoothstep(0.28, 0.34, length(fract(q) - 0.5));
    if (u_pattern == 4) return smoothstep(0.35, 0.65, fbm(q));
    if (u_pattern == 5) return 0.5 + 0.5 * sin(q.x * 3.0 + 6.0 * fbm(q * 0.5));
    if (u_pattern == 6) return smoothstep(0.2, 0.8, fract(length(q.xy) + 0.6 * fbm(q)));
    if (u_pattern == 7) return clamp(0.5 + 0.5 * p.z, 0.0, 1.0);
    return 0.0;
}
void main() {
    vec4 texel = texture(u_texture, v_uv);
    float alpha = texel.a * v_color.a;
    if (alpha < u_alpha_cutoff) discard;
    vec3 albedo = mix(u_color, u_color2, pattern_weight(v_pattern)) * v_color.rgb * texel.rgb;
    out_color = vec4(clamp(albedo * v_light + u_specular * v_highlight, 0.0, 1.0), 1.0);
    out_depth = v_depth;
}
"""


class MeshRenderer:
    """Renders :class:`RenderMesh` es from :class:`Cameras` into RGBA + depth, headless (EGL)."""

    def __init__(self, config: RasterConfig = RasterConfig()) -> None:
        import moderngl  # optional dependency (diffusiongs[data]); imported here so that readers do not need it

        self.config = config
        self._gl = moderngl
        self.ctx = moderngl.create_standalone_context(backend="egl")
        self.program = self.ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
        self._white = self.ctx.texture((1, 1), 4, bytes([255, 255, 255, 255]))
        self._targets: dict[tuple[int, int], tuple] = {}

    def _framebuffers(self, width: int, height: int, with_depth: bool):
        """(framebuffer to draw into, framebuffer to read from), made once per image size and kept."""
        key = (width, height, with_depth)
        if key not in self._targets:
            size, samples = (width, height), self.config.samples

            def colour_buffers(samples: int) -> list:
                buffers = [self.ctx.renderbuffer(size, 4, samples=samples)]
                if with_depth:
                    buffers.append(self.ctx.renderbuffer(size, 1, samples=samples, dtype="f4"))
                return buffers

            draw = self.ctx.framebuffer(colour_buffers(samples), self.ctx.depth_renderbuffer(size, samples=samples))
            self._targets[key] = (draw, draw if samples == 0 else self.ctx.framebuffer(colour_buffers(0)))
        return self._targets[key]

    def _upload(self, part: MeshPart):
        n = len(part.positions)
        uvs = part.uvs if part.uvs is not None else np.zeros((n, 2), np.float32)
        pattern = part.pattern_coords if part.pattern_coords is not None else np.zeros((n, 3), np.float32)
        interleaved = np.concatenate([part.positions, part.normals, part.colors, uvs, pattern], axis=1)
        vbo = self.ctx.buffer(np.ascontiguousarray(interleaved, dtype=np.float32).tobytes())
        ibo = self.ctx.buffer(np.ascontiguousarray(part.faces, dtype=np.uint32).tobytes())
        vao = self.ctx.vertex_array(self.program, [(vbo, "3f 3f 4f 2f 3f", "in_position", "in_normal", "in_color",
                                                    "in_uv", "in_pattern")], ibo, index_element_size=4)
        texture = self._white
        if part.texture is not None:
            image = _fit_texture(part.texture, self.config.max_texture_size)
            # GL's texture origin is the bottom row; uploading rows bottom-first makes (u, v) with v up sample
            # the right texel without touching the coordinates.
            texture = self.ctx.texture((image.shape[1], image.shape[0]), 4,
                                       np.ascontiguousarray(image[::-1]).tobytes())
            texture.build_mipmaps()
            texture.filter = (self._gl.LINEAR_MIPMAP_LINEAR, self._gl.LINEAR)
            texture.repeat_x = texture.repeat_y = True
        return vao, (vbo, ibo), texture

    def _set_material(self, material: Material) -> None:
        prog = self.program
        prog["u_color"].value = tuple(material.color)
        prog["u_color2"].value = tuple(material.color2)
        prog["u_pattern"].value = PATTERN_IDS[material.pattern]
        prog["u_frequency"].value = material.frequency
        prog["u_specular"].value = material.specular
        prog["u_shininess"].value = material.shininess
        prog["u_alpha_cutoff"].value = -1.0 if material.alpha_cutoff is None else material.alpha_cutoff

    def _set_lighting(self, lighting: Lighting) -> None:
        if len(lighting.directions) > MAX_LIGHTS or len(lighting.directions) != len(lighting.colors):
            raise ValueError(f"Lighting: up to {MAX_LIGHTS} lights with one colour each")
        prog = self.program
        prog["u_sky"].value = tuple(lighting.sky)
        prog["u_ground"].value = tuple(lighting.ground)
        prog["u_num_lights"].value = len(lighting.directions)
        pad = [(0.0, 0.0, 1.0)] * (MAX_LIGHTS - len(lighting.directions))
        prog["u_light_dir"].write(np.array(list(lighting.directions) + pad, np.float32).tobytes())
        prog["u_light_rgb"].write(np.array(list(lighting.colors) + pad, np.float32).tobytes())

    def render(self, mesh: RenderMesh, cameras: Cameras, lighting: Lighting = Lighting(),
               with_depth: bool = True) -> RenderOutput:
        """Render ``mesh`` from every camera (batch shape ``[view]``) over a transparent background."""
        width, height = cameras.width, cameras.height
        draw, read = self._framebuffers(width, height, with_depth)
        uploads = [self._upload(part) for part in mesh.parts]
        try:
            self._set_lighting(lighting)
            cam = cameras.to(dtype=torch.float64)
            world_to_clip = (gl_clip_from_camera(cam.K, width, height, self.config.near, self.config.far)
                             @ cam.w2c()).numpy()
            centers = cam.centers.numpy()
            forwards = cam.forward.numpy()
            views = len(world_to_clip)
            premultiplied = np.empty((views, height, width, 4), np.uint8)
            z_times_alpha = np.zeros((views, height, width), np.float32)
            self.ctx.enable(self._gl.DEPTH_TEST)
            for v in range(views):
                draw.use()
                draw.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
                # GLSL matrices are column-major: the transpose's bytes are the matrix.
                self.program["u_world_to_clip"].write(world_to_clip[v].T.astype(np.float32).tobytes())
                self.program["u_eye"].value = tuple(centers[v])
                self.program["u_camera_forward"].value = tuple(forwards[v])
                for part, (vao, _, texture) in zip(mesh.parts, uploads, strict=True):
                    self._set_material(part.material)
                    texture.use(0)
                    vao.render()
                if read is not draw:
                    self.ctx.copy_framebuffer(read, draw)  # the multisample resolve
                read.read_into(premultiplied[v], components=4, attachment=0)
                if with_depth:
                    read.read_into(z_times_alpha[v], components=1, attachment=1, dtype="f4")
        finally:
            for vao, buffers, texture in uploads:
                vao.release()
                for buffer in buffers:
                    buffer.release()
                if texture is not self._white:
                    texture.release()
        rgba, depth = _unpremultiply(premultiplied, z_times_alpha)
        return RenderOutput(rgba, depth if with_depth else None)

    def release(self) -> None:
        self.ctx.release()


def _unpremultiply(premultiplied: np.ndarray, z_times_alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    alpha = premultiplied[..., 3:4].astype(np.float32) / 255.0
    safe = np.maximum(alpha, 1.0 / 255.0)
    rgb = np.clip(np.rint(premultiplied[..., :3] / safe), 0, 255).astype(np.uint8)
    rgba = np.concatenate([np.where(alpha > 0, rgb, 0).astype(np.uint8), premultiplied[..., 3:4]], axis=-1)
    return rgba, np.where(alpha[..., 0] > 0, z_times_alpha / safe[..., 0], 0.0).astype(np.float32)


def _fit_texture(texture: np.ndarray, max_size: int) -> np.ndarray:
    if max(texture.shape[:2]) <= max_size:
        return texture
    from PIL import Image

    scale = max_size / max(texture.shape[:2])
    size = (max(1, round(texture.shape[1] * scale)), max(1, round(texture.shape[0] * scale)))
    return np.asarray(Image.fromarray(texture).resize(size, Image.Resampling.BILINEAR))


def configure_llvmpipe_threads(workers: int) -> None:
    """Share the cores between worker processes: Mesa's software rasteriser (llvmpipe) otherwise starts one
    thread per core in every process. Call before the first context is made; a value the user set is kept."""
    os.environ.setdefault("LP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, workers))))
