"""Uploads, file_id reuse, getFile and downloads, for bot and member media alike."""

import struct
import zlib

import aiohttp
import pytest
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import BufferedInputFile

from bot.emulator import EmulatorLimits

TOKEN = "123456:TEST-token"


def png(width: int, height: int) -> bytes:
    """A valid tiny PNG (one colour) so sizes can be checked."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x10\x20\x30" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


async def test_send_photo_upload_get_file_and_download(bot, emu, member):
    image = png(40, 30)
    sent = await bot.send_photo(
        member["id"],
        BufferedInputFile(image, filename="card.png"),
        caption="Deine <b>Karte</b>",
        parse_mode="HTML",
    )
    photo = sent.photo[-1]
    assert (photo.width, photo.height, photo.file_size) == (40, 30, len(image))
    assert sent.caption == "Deine Karte"
    assert sent.caption_entities[0].type == "bold"

    file = await bot.get_file(photo.file_id)
    assert file.file_path.startswith("photos/")
    downloaded = await bot.download_file(file.file_path)
    assert downloaded.read() == image

    [stored] = emu.sent_messages(member["id"])
    assert stored["media"] == {"kind": "photo", "file_id": photo.file_id}
    assert stored["caption"] == "Deine <b>Karte</b>"


async def test_send_document_upload_and_resend_by_file_id(bot, member):
    pdf = b"%PDF-1.4 invoice"
    first = await bot.send_document(member["id"], BufferedInputFile(pdf, filename="rechnung.pdf"))
    doc = first.document
    assert (doc.file_name, doc.mime_type, doc.file_size) == (
        "rechnung.pdf",
        "application/pdf",
        len(pdf),
    )
    again = await bot.send_document(member["id"], doc.file_id)
    assert again.document.file_id == doc.file_id
    data = await bot.download(doc.file_id)
    assert data.read() == pdf


async def test_voice_and_sticker_from_the_bot(bot, member):
    voice = await bot.send_voice(
        member["id"], BufferedInputFile(b"OggS voice", filename="v.ogg"), duration=3
    )
    assert voice.voice.duration == 3
    sticker = await bot.send_sticker(
        member["id"], BufferedInputFile(b"RIFF....WEBP", filename="s.webp")
    )
    assert sticker.sticker.type == "regular"


async def test_bad_file_references(bot, member):
    with pytest.raises(TelegramBadRequest, match="wrong file identifier/HTTP URL specified"):
        await bot.send_document(member["id"], "no-such-file-id")
    # The emulator never fetches URLs from the internet.
    with pytest.raises(TelegramBadRequest, match="failed to get HTTP URL content"):
        await bot.send_photo(member["id"], "https://example.com/cat.jpg")
    with pytest.raises(TelegramBadRequest, match="invalid file_id"):
        await bot.get_file("nope")
    photo = await bot.send_photo(member["id"], BufferedInputFile(png(1, 1), filename="p.png"))
    with pytest.raises(TelegramBadRequest, match="can't use file of type Photo as Document"):
        await bot.send_document(member["id"], photo.photo[-1].file_id)


async def test_member_media_reaches_the_bot_and_downloads(bot, emu, member):
    """Every media kind a member can send arrives as an update the bot can fetch (relay)."""
    image = png(8, 8)
    await emu.send_photo(member["id"], image, caption="Screenshot")
    await emu.send_document(member["id"], b"col1,col2\n", "export.csv", "text/csv")
    await emu.send_voice(member["id"], b"OggS member voice", duration=4)
    await emu.send_sticker(member["id"], emoji="👍")

    updates = await bot.get_updates()
    messages = [u.message for u in updates]
    assert messages[0].photo[-1].width == 8 and messages[0].caption == "Screenshot"
    assert (messages[1].document.file_name, messages[1].document.mime_type) == (
        "export.csv",
        "text/csv",
    )
    assert messages[2].voice.duration == 4
    assert messages[3].sticker.emoji == "👍"
    for message, expected in [
        (messages[0], image),
        (messages[1], b"col1,col2\n"),
        (messages[2], b"OggS member voice"),
    ]:
        media = message.photo[-1] if message.photo else (message.document or message.voice)
        assert (await bot.download(media.file_id)).read() == expected
    # The bot can relay what the member sent by file_id.
    relayed = await bot.send_document(member["id"], messages[1].document.file_id)
    assert relayed.document.file_name == "export.csv"


async def test_file_download_requires_the_token(base_url, bot, member):
    sent = await bot.send_document(member["id"], BufferedInputFile(b"x", filename="a.txt"))
    file = await bot.get_file(sent.document.file_id)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base_url}/file/bot{TOKEN}/{file.file_path}") as resp:
            assert resp.status == 200 and await resp.read() == b"x"
        async with http.get(f"{base_url}/file/bot1:bad/{file.file_path}") as resp:
            assert resp.status == 401
        async with http.get(f"{base_url}/file/bot{TOKEN}/documents/missing.txt") as resp:
            assert resp.status == 404


async def test_edit_caption_audio_and_video(bot, emu, member):
    emu.set_limits(EmulatorLimits.unlimited())  # many sends to one chat
    sent = await bot.send_document(
        member["id"], BufferedInputFile(b"data", filename="d.bin"), caption="alt"
    )
    edited = await bot.edit_message_caption(
        chat_id=member["id"], message_id=sent.message_id, caption="<b>neu</b>", parse_mode="HTML"
    )
    assert edited.caption == "neu" and edited.caption_entities[0].type == "bold"
    assert emu.sent_messages(member["id"])[0]["edits"][0]["caption"] == "alt"
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_caption(
            chat_id=member["id"],
            message_id=sent.message_id,
            caption="<b>neu</b>",
            parse_mode="HTML",
        )
    text = await bot.send_message(member["id"], "no media")
    with pytest.raises(TelegramBadRequest, match="there is no caption in the message to edit"):
        await bot.edit_message_caption(
            chat_id=member["id"], message_id=text.message_id, caption="x"
        )
    with pytest.raises(TelegramBadRequest, match="message caption is too long"):
        await bot.send_document(
            member["id"], BufferedInputFile(b"x", filename="x"), caption="x" * 1025
        )

    audio = await bot.send_audio(member["id"], BufferedInputFile(b"ID3", filename="song.mp3"))
    assert audio.audio.file_name == "song.mp3" and audio.audio.mime_type == "audio/mpeg"
    video = await bot.send_video(
        member["id"], BufferedInputFile(b"mp4", filename="clip.mp4"), width=640, height=360
    )
    assert (video.video.width, video.video.height) == (640, 360)
